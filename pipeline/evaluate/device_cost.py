"""What the device version of an imported model costs: the model as imported → pruned → int8, each with
accuracy, size, MACs and batch-1 latency, beside the shipped release's int8 model, all measured in one run.

Latency is timed round-robin (each round times a block of calls of every model, in an order that rotates),
so a burst of load on a shared machine slows all of them alike; the figure is the median over rounds of
each block's median, batch 1, one thread, through edge_runtime's Classifier as on the device.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.train import models

ROUNDS = 20
CALLS_PER_ROUND = 50
WARMUP = 50


def latencies_us(paths: dict[str, Path], image: np.ndarray, rounds: int = ROUNDS,
                 calls: int = CALLS_PER_ROUND) -> dict[str, float]:
    """Median batch-1 latency (µs) of each model file, timed round-robin in the same run."""
    from edge_runtime.classifier import Classifier
    from edge_runtime.timing import round_robin_seconds
    runners = {}
    for name, path in paths.items():
        clf = Classifier(str(path), num_threads=1, verify=False)
        runners[name] = lambda clf=clf: clf.scores(image[None])
    seconds = round_robin_seconds(runners, rounds, calls, warmup=WARMUP)
    # the median of each round's median: one slow round moves it no more than one block
    return {n: float(np.median(np.median(s, axis=1)) * 1e6) for n, s in seconds.items()}


def accuracy(path: Path, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Top-1 accuracy of a model file through edge_runtime (the manifest beside it gives the normalization)."""
    from edge_runtime.classifier import Classifier
    clf = Classifier(str(path), num_threads=2, verify=False, calibrated=False)
    return float((clf.scores(x_test).argmax(1) == y_test).mean())


def release_row(release: Path, x_test: np.ndarray, y_test: np.ndarray) -> dict | None:
    """The shipped release's int8 TFLite model measured on the same test images, or None when absent."""
    path = Path(release) / "model_int8.tflite"
    manifest_path = Path(release) / "manifest.json"
    if not path.is_file() or not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    origin = manifest.get("config", {}).get("origin")
    model = (f"{origin['file']} (imported)" if isinstance(origin, dict) else
             manifest.get("config", {}).get("train", {}).get("model", "?"))
    return {"stage": "release", "row": f"shipped release `{Path(release).name}/` ({model}), int8", "file": str(path),
            "accuracy": accuracy(path, x_test, y_test),
            "bytes": path.stat().st_size, "macs": manifest.get("float_reference", {}).get("macs")}


def measure(rows: list[dict], image: np.ndarray) -> list[dict]:
    """`rows` (each with a model "file") with "latency_us" added, all timed together."""
    times = latencies_us({r["row"]: Path(r["file"]) for r in rows}, image)
    return [{**r, "latency_us": round(times[r["row"]], 1)} for r in rows]


def public(rows: list[dict]) -> list[dict]:
    """The rows as the manifest keeps them: figures, not paths of this run's staging folder."""
    return [{k: (Path(v).name if k == "file" else v) for k, v in r.items()} for r in rows]


def _gzip_bytes(path: Path) -> int:
    return len(gzip.compress(Path(path).read_bytes(), 9, mtime=0))


def measure_cost(cfg, splits, model, pruned, float_acc: float, results: dict, out: Path,
         log: Callable[[str, str], None]) -> list[dict]:
    """The manifest's "device_cost": the imported model (`out`/unpruned_float.tflite) → pruned → int8 (the
    validated artifacts in `out`), beside the release in cfg.keras_model.release, timed together."""
    def macs(m):
        return models.macs(m) or None         # a model wrapped as it is has no layers to count

    unpruned = out / "unpruned_float.tflite"
    table = [{"stage": "imported", "row": f"imported ({cfg.origin['file']}), float32 TFLite", "file": unpruned,
              "accuracy": accuracy(unpruned, splits.x_test, splits.y_test), "keras_accuracy": round(float_acc, 4),
              "macs": macs(model)},
             {"stage": "pruned", "file": out / "model_float.tflite",
              "row": "pruned, float32 TFLite" if cfg.prune.enabled else "not pruned (--no-prune), float32 TFLite",
              "accuracy": results["model_float.tflite"]["accuracy"], "macs": macs(pruned)},
             {"stage": "int8", "row": "int8 TFLite (model_int8.tflite, what the device runs)",
              "file": out / "model_int8.tflite", "accuracy": results["model_int8.tflite"]["accuracy"],
              "macs": macs(pruned)}]
    release = release_row(Path(cfg.keras_model.release), splits.x_test, splits.y_test)
    if release is None:
        log("cost", f"no release in {cfg.keras_model.release}/ to set beside the imported model (--compare-with DIR)")
    else:
        table.append(release)
    for r in table:
        r.update(bytes=Path(r["file"]).stat().st_size, gzip_bytes=_gzip_bytes(Path(r["file"])))
    log("cost", f"batch-1 latency of {len(table)} models, timed round-robin, one thread")
    table = measure(table, splits.x_test[0])
    for r in table:
        log("cost", f"{r['row']}: accuracy {r['accuracy']:.2%}, {r['bytes']:,} B, {r['latency_us']:.0f} µs")
    return public(table)
