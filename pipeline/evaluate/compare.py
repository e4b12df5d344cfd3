"""Compare architectures (params, MACs, float and int8 accuracy, size, latency) and k-fold estimates."""
from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.data import fashion_mnist
from pipeline.train import models
from pipeline.quantize import representative, tflite
from pipeline.train import fit
from pipeline.release import manifest
from pipeline.config import SEED_STYLE, Config, without_pruning

def model_config(cfg: Config, name: str) -> Config:
    """The seeds are trained the tutorial way (SEED_STYLE); the edge models with the profile's recipe,
    not pruned, so their schedule runs to its end."""
    t = replace(cfg.train, model=name, **(SEED_STYLE if name in ("mlp", "baseline") else {}))
    return replace(without_pruning(cfg), train=t)


def write_minimal_manifest(folder: Path, cfg: Config) -> None:
    """Labels and normalization beside a model, so edge_runtime standardizes its input as trained."""
    manifest.write(folder, manifest.minimal(cfg))


def batch1_latency_us(model_path: Path, image: np.ndarray, calls: int = 500) -> float:
    """Median batch-1 latency of the int8 artifact in LiteRT, one thread, after warm-up."""
    from edge_runtime.classifier import Classifier
    from edge_runtime.timing import call_seconds
    clf = Classifier(str(model_path), num_threads=1, verify=False)
    return float(np.median(call_seconds(lambda: clf.scores(image[None]), calls, warmup=50)) * 1e6)


def compare(cfg: Config, names: list[str]) -> list[dict]:
    """Train (or reuse) each model, convert it to int8 TFLite and measure it on the test set."""
    from edge_runtime.classifier import Classifier
    splits = fashion_mnist.load(cfg)
    rows = []
    for name in names:
        mcfg = model_config(cfg, name)
        print(f"[compare] {name}: {mcfg.train.epochs} epochs ({mcfg.train.optimizer})", file=sys.stderr, flush=True)
        model, history, _ = fit.train_or_load(mcfg, splits)
        float_acc = float((fit.predict(model, splits.x_test, mcfg).argmax(1) == splits.y_test).mean())
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model_int8.tflite"
            path.write_bytes(tflite.to_tflite_int8(model, representative.calibration_images(mcfg, splits)))
            write_minimal_manifest(Path(tmp), mcfg)
            clf = Classifier(str(path), num_threads=1, verify=False)
            int8_acc = float((clf.scores(splits.x_test).argmax(1) == splits.y_test).mean())
            latency = batch1_latency_us(path, splits.x_test[0])
            size = path.stat().st_size
        rows.append({"model": name, "epochs": mcfg.train.epochs, "optimizer": mcfg.train.optimizer,
                     "params": int(model.count_params()), "macs": int(models.macs(model)),
                     "float_accuracy": float_acc, "int8_accuracy": int8_acc, "int8_bytes": size,
                     "latency_us": latency, "train_seconds": history.get("seconds")})
    return rows


def table(rows: list[dict], test_images: int) -> str:
    lines = [f"Official test set ({test_images:,} images); int8 = full-integer TFLite, not pruned; latency = "
             "median batch-1 LiteRT call, 1 thread, on the machine that ran `python -m pipeline compare`.", "",
             "| model | training | params | MACs | float acc | int8 acc | int8 size (bytes) | batch-1 latency (µs) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['epochs']} epochs, {r['optimizer']} | {r['params']:,} | {r['macs'] / 1e6:.2f} M | {r['float_accuracy']:.2%} | "
                     f"{r['int8_accuracy']:.2%} | {r['int8_bytes']:,} | {r['latency_us']:.0f} |")
    return "\n".join(lines)


def folds(cfg: Config, k: int) -> dict:
    """k-fold estimate on the 60,000 training images: stratified folds, validation accuracy per fold."""
    x, y, xt, yt, source = fashion_mnist.load_raw(cfg.data.data_dir)
    rng = np.random.default_rng(cfg.seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold_of[idx] = np.arange(len(idx)) % k
    if cfg.data.train_limit:
        keep = np.zeros(len(y), dtype=bool)
        keep[fashion_mnist.stratified_indices(y, cfg.data.train_limit, cfg.seed)[1]] = True
    else:
        keep = np.ones(len(y), dtype=bool)
    scores = []
    for f in range(k):
        tr, va = keep & (fold_of != f), keep & (fold_of == f)
        s = fashion_mnist.Splits(x[tr], y[tr], x[va], y[va], xt, yt, source)
        fcfg = replace(without_pruning(cfg), seed=cfg.seed + f)
        model, _ = fit.train(fcfg, s)
        acc = float((fit.predict(model, s.x_val, fcfg).argmax(1) == s.y_val).mean())
        scores.append(acc)
        print(f"[folds] fold {f + 1}/{k}: validation accuracy {acc:.2%} on {va.sum()} images", file=sys.stderr,
              flush=True)
    return {"model": cfg.train.model, "k": k, "scores": scores, "mean": float(np.mean(scores)),
            "std": float(np.std(scores, ddof=1)) if k > 1 else 0.0}
