"""`make export`: data → train → prune → quantize → ONNX → validate → gate → promote, in that order.

Everything is written into a staging folder beside `exported/`; only a run whose every artifact
passes the parity gate replaces `exported/`, by rename. A failed or killed run leaves the
previous release byte-identical.
"""
from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.train import adapt
from pipeline.evaluate import temperature
from pipeline.data import fashion_mnist
from pipeline.evaluate import device_cost
from pipeline.quantize import onnx_export
from pipeline.keras_import import importer
from pipeline.release import metadata
from pipeline.train import models
from pipeline.evaluate import real_photos
from pipeline.train import photo_variants
from pipeline.train import prune
from pipeline.quantize import tflite
from pipeline.release import report
from pipeline.train import fit
from pipeline.evaluate import parity
from pipeline.config import Config, stage_key
from pipeline.errors import DataError, GateError
from pipeline.train.prune import kernel_sparsity

ARTIFACTS = {  # file → (format, precision)
    "model_float.tflite": ("tflite", "float32"),
    "model_int8.tflite": ("tflite", "int8"),
    "model_float.onnx": ("onnx", "float32"),
    "model_int8.onnx": ("onnx", "int8"),
}
# The MediaPipe-ready model (uint8 RGB input, normalization inside): validated and gated like the others,
# but not by edge_runtime, which takes 28x28x1 models.
RGB_ARTIFACT = "model_int8_rgb.tflite"
ALL_ARTIFACTS = {**ARTIFACTS, RGB_ARTIFACT: ("tflite", "int8")}


# How much better (top-1 agreement with the float model, validation split) onnxruntime's QDQ int8 model must
# be to ship instead of tf2onnx's: 0.5 pp = 25 of 5,000 images, well above the 2 images seen between them.
ONNX_TF2ONNX_MARGIN = 0.005


def progress(stage: str, message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {stage}: {message}", file=sys.stderr, flush=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def gzip_bytes(path: Path) -> int:
    return len(gzip.compress(Path(path).read_bytes(), 9, mtime=0))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --- promotion ----------------------------------------------------------------------------------

def _old(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def recover(target: Path) -> None:
    """Undo what a killed run may have left: a half-promoted release or stale staging folders."""
    old = _old(target)
    if old.exists():
        if target.exists():
            shutil.rmtree(old)
        else:
            os.rename(old, target)
    for stale in target.parent.glob(f".{target.name}-staging-*"):
        shutil.rmtree(stale, ignore_errors=True)


def promote(staging: Path, target: Path) -> None:
    """Replace `target` with `staging` by two renames; `recover` completes an interrupted swap."""
    old = _old(target)
    if target.exists():
        os.rename(target, old)
    os.rename(staging, target)
    shutil.rmtree(old, ignore_errors=True)


# --- the manifest -------------------------------------------------------------------------------

def artifact_entry(folder: Path, name: str, quant: dict) -> dict:
    fmt, precision = ALL_ARTIFACTS[name]
    path = folder / name
    return {"file": name, "format": fmt, "precision": precision, "bytes": path.stat().st_size,
            "gzip_bytes": gzip_bytes(path), "sha256": sha256(path),
            "input": quant["input"], "output": quant["output"]}


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def base_manifest(cfg: Config, entries: list[dict]) -> dict:
    return {
        "schema": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git_commit(),
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "labels": fashion_mnist.CLASS_NAMES,
        "input": {"height": 28, "width": 28, "channels": 1, "layout": "NHWC",
                  "normalization": {"mean": cfg.data.mean, "std": cfg.data.std}},
        "artifacts": entries,
    }


# --- the chain ------------------------------------------------------------------------------------

def run(cfg: Config) -> dict:
    """Run the whole chain for `cfg`; return the manifest of the promoted release."""
    t_start = time.perf_counter()
    target = Path(cfg.export_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)

    progress("data", "loading Fashion-MNIST")
    splits = fashion_mnist.load(cfg)
    progress("data", splits.describe())

    imported = None
    if cfg.keras_model.path:                     # the user's model instead of training ours
        imported = importer.run(cfg, splits, progress)
        cfg, model, history, model_key = imported.cfg, imported.model, {}, imported.key
        stage = "import"
    else:
        tail = f", then {cfg.prune.epochs} pruning, on one schedule" if cfg.prune.enabled else ""
        progress("train", f"{cfg.train.model}, {cfg.train.epochs} epochs{tail} (profile {cfg.profile})")
        model, history, _ = fit.train_or_load(cfg, splits)
        model_key, stage = fit.cache_key(cfg), "train"
    float_probs = fit.predict(model, splits.x_test, cfg)
    float_acc = float((float_probs.argmax(1) == splits.y_test).mean())
    progress(stage, f"float Keras test accuracy {float_acc:.2%} ({model.count_params()} params"
                    f"{', before pruning' if cfg.prune.enabled else ''})")

    tail = " (Adam, cosine to 0: the imported model's fine-tune)" if imported else ""
    progress("prune", f"target sparsity {cfg.prune.target_sparsity:.0%}, {cfg.prune.epochs} epochs{tail}"
             if cfg.prune.enabled else "off (--no-prune): the model ships as it is")
    pruned, prune_info = prune.prune_or_load(model, cfg, splits, model_key)
    if imported and cfg.prune.enabled:           # no training curves of ours: show the fine-tune's
        history = prune_info.get("history", {})
    # Measured here from both models, never taken from a cache: what pruning buys once compressed.
    prune_info = {**prune_info, "kernel_gzip_bytes_before": prune.kernel_gzip_bytes(model),
                  "kernel_gzip_bytes_after": prune.kernel_gzip_bytes(pruned)}
    fmnist_only, adapt_info, photo_set = None, None, photo_variants.load(cfg)
    if photo_set is None:
        why = ("no real-photos-train folder (--photos-train, $FASHION_EDGE_PHOTOS_TRAIN, ../shared/real-photos-train)"
               if cfg.photos_train.auto else
               "an imported model is adapted on real photos only when --photos-train names a folder" if imported else
               "training photos not looked for (--no-photos-train, or the profile)")
        progress("adapt", f"{why}: the Fashion-MNIST-only model ships")
    else:
        progress("adapt", f"{len(photo_set.paths)} real photos from {photo_set.folder} ({photo_set.counts()}): "
                          f"{cfg.photos_train.epochs} epochs, {cfg.photos_train.share:.0%} of every batch")
        fmnist_only = pruned
        before_acc = float((fit.predict(fmnist_only, splits.x_test, cfg).argmax(1) == splits.y_test).mean())
        pruned, adapt_info = adapt.adapt_or_load(pruned, cfg, splits, photo_set, stage_key(model_key, cfg.prune))
        adapt_info = {**adapt_info, "fashion_mnist_only_test_accuracy": round(before_acc, 4)}
    ref_probs = fit.predict(pruned, splits.x_test, cfg)
    ref_pred = ref_probs.argmax(1)
    ref_acc = float((ref_pred == splits.y_test).mean())
    if adapt_info is None:
        progress("prune", f"sparsity {prune_info['measured_sparsity']:.1%}, pruned Keras test accuracy {ref_acc:.2%}")
    else:
        progress("adapt", f"Fashion-MNIST test accuracy (float Keras) {before_acc:.2%} → {ref_acc:.2%}, "
                          f"sparsity {kernel_sparsity(pruned):.1%}")
    adapted = None if adapt_info is None else {"model": fmnist_only, "photos": photo_set, "info": adapt_info}

    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-staging-", dir=target.parent))
    try:
        manifest = _build(cfg, splits, model, pruned, prune_info, float_acc, ref_acc, ref_pred, ref_probs,
                          history, staging, adapted, imported)
        failures = manifest["gate"]["failures"]
        if failures:
            raise GateError("parity gate failed, exported/ left untouched: " + "; ".join(failures))
        progress("promote", f"{staging.name} → {target}")
        had_compat = (target / "compat.md").is_file()
        promote(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if had_compat:
        progress("compat", f"the previous compat.md and compat.json measured the previous artifacts and are not in "
                           f"the new {target}: run `make compat` (python -m pipeline compat --exported {target})")
    progress("done", f"wall time {time.perf_counter() - t_start:.0f} s")
    return manifest


def write_metadata(cfg: Config, out: Path) -> None:
    """Labels, normalization and a description into every model file in `out` (pipeline/release/metadata.py)."""
    labels, version = list(fashion_mnist.CLASS_NAMES), f"fashion-edge {git_commit()}"
    what = "Fashion-MNIST clothing classifier ({}), 10 classes, from the pruned tf_keras model."
    if isinstance(cfg.origin, dict):
        what = (f"Fashion-MNIST clothing classifier ({{}}), 10 classes, imported from {cfg.origin['file']}"
                f"{', pruned' if cfg.prune.enabled else ''}.")
    for name, (fmt, precision) in ARTIFACTS.items():
        if fmt == "tflite":
            metadata.write_tflite(out / name, labels, cfg.data.mean, cfg.data.std, version=version,
                                  description=what.format(f"{precision}, 28x28 grayscale input"))
        else:
            metadata.write_onnx(out / name, labels, cfg.data.mean, cfg.data.std, version=version,
                                description=what.format(precision))
    metadata.write_tflite(out / RGB_ARTIFACT, labels, None, None, version=version, channels=3,
                          description=what.format("int8 inside, uint8 RGB input 0..255; grayscale and "
                                                  "normalization are in the graph"))


def int8_tflite_calibrated(probs: np.ndarray, entries: list[dict]) -> np.ndarray:
    """`probs` rescaled by the temperature fitted for model_int8.tflite."""
    from edge_runtime.quant import temperature_scale
    t = next(e for e in entries if e["file"] == "model_int8.tflite")["calibration"]["temperature"]
    return temperature_scale(probs, t)


def _build(cfg, splits, model, pruned, prune_info, float_acc, ref_acc, ref_pred, ref_probs, history,
           out: Path, adapted: dict | None = None, imported=None) -> dict:
    progress("quantize", "TFLite float32 and full-integer int8")
    calib = tflite.calibration_images(cfg, splits)
    (out / "model_float.tflite").write_bytes(tflite.to_tflite_float(pruned))
    (out / "model_int8.tflite").write_bytes(tflite.to_tflite_int8(pruned, calib))
    (out / RGB_ARTIFACT).write_bytes(tflite.to_tflite_int8_rgb(pruned, calib, cfg.data.mean, cfg.data.std))
    quant = {name: tflite.io_quantization(out / name)
             for name in ("model_float.tflite", "model_int8.tflite", RGB_ARTIFACT)}
    unpruned_tflite = out / "unpruned_float.tflite"        # measured for the report, not shipped
    unpruned_tflite.write_bytes(tflite.to_tflite_float(model))
    unpruned_size = {"bytes": unpruned_tflite.stat().st_size, "gzip_bytes": gzip_bytes(unpruned_tflite)}
    if imported is None:                                   # an imported model's is timed below
        unpruned_tflite.unlink()

    progress("onnx", "float (tf2onnx from Keras) and two int8 candidates")
    float_onnx = onnx_export.to_onnx_float(pruned, out / "model_float.onnx", cfg.quant.onnx_opset)
    candidates = {
        "tf2onnx on the int8 .tflite": onnx_export.to_onnx_from_tflite(
            out / "model_int8.tflite", out / "cand_tflite.onnx", cfg.quant.onnx_opset, quant["model_int8.tflite"]),
        "onnxruntime static QDQ": onnx_export.to_onnx_qdq(float_onnx, out / "cand_qdq.onnx", calib),
    }
    for path in [float_onnx, *candidates.values()]:
        onnx_export.check(path)
    quant["model_float.onnx"] = {"input": {"dtype": "float32"}, "output": {"dtype": "float32"}}

    # Pick the int8 ONNX path by measured parity on the VALIDATION split (the test set is for the end).
    val_ref = fit.predict(pruned, splits.x_val, cfg).argmax(1)
    files = [n for n in ARTIFACTS if n != "model_int8.onnx"]
    write_json(out / "manifest.json", base_manifest(cfg, [artifact_entry(out, n, quant[n]) for n in files]))
    choice = {}
    for label, path in candidates.items():
        r = parity.evaluate(path, splits.x_val, splits.y_val, val_ref)
        choice[label] = {"val_agreement": round(r["agreement_with_float"], 4), "val_accuracy": round(r["accuracy"], 4)}
        progress("onnx", f"int8 candidate {label}: validation agreement {r['agreement_with_float']:.2%}")
    # tf2onnx's model is the one other clients read: on the default release OpenCV DNN 4.14 got 61 % right with
    # onnxruntime's QDQ model and OpenCV 5.0 refused it (int8 input), while both match onnxruntime on tf2onnx's
    # (`python -m pipeline compat`). So QDQ ships only when it is clearly better on the validation split.
    top = max(c["val_agreement"] for c in choice.values())
    best = next((k for k in candidates if k.startswith("tf2onnx")
                 and choice[k]["val_agreement"] >= top - ONNX_TF2ONNX_MARGIN), max(candidates, key=lambda k: choice[k]["val_agreement"]))
    os.replace(candidates[best], out / "model_int8.onnx")
    for path in candidates.values():
        if path.exists():
            path.unlink()
    quant["model_int8.onnx"] = (quant["model_int8.tflite"] if best.startswith("tf2onnx")
                                else {"input": {"dtype": "float32"}, "output": {"dtype": "float32"}})
    opencv = {name: onnx_export.for_opencv(out / name) for name in ("model_float.onnx", "model_int8.onnx")}
    for name in opencv:
        onnx_export.check(out / name)
    progress("onnx", "rewritten for OpenCV DNN 4.x: " + "; ".join(f"{n}: {len(c)} change(s)" for n, c in opencv.items()))

    progress("metadata", "labels and normalization into every artifact (TFLite Metadata, ONNX metadata_props)")
    write_metadata(cfg, out)

    entries = [artifact_entry(out, n, quant[n]) for n in ALL_ARTIFACTS]
    manifest = base_manifest(cfg, entries)
    write_json(out / "manifest.json", manifest)

    progress("validate", f"every artifact in its runtime on {len(splits.y_test)} test images "
                         "(each .tflite twice: LiteRT's default XNNPACK kernels and its built-in reference kernels)")
    results = {}
    for entry in entries:
        name = entry["file"]
        kernels = parity.KERNELS if entry["format"] == "tflite" else parity.KERNELS[:1]
        evaluate = parity.evaluate_rgb if name == RGB_ARTIFACT else parity.evaluate
        runs = {k: evaluate(out / name, splits.x_test, splits.y_test, ref_pred, kernels=k) for k in kernels}
        r = runs["default"]
        results[name] = r
        entry.update(accuracy=round(r["accuracy"], 4), agreement_with_float=round(r["agreement_with_float"], 4),
                     per_class_accuracy=r["per_class_accuracy"])
        if entry["format"] == "tflite":
            # The int8 kernels of XNNPACK and of TFLite's built-in ops round differently: a few answers
            # differ, so both counts are kept and both are gated (tflite-runtime runs the built-in ones).
            entry["kernels"] = {k: {"correct": int((v["predictions"] == splits.y_test).sum()),
                                    "accuracy": round(v["accuracy"], 4),
                                    "agreement_with_float": round(v["agreement_with_float"], 4)}
                                for k, v in runs.items()}
            results[f"{name} (reference kernels)"] = runs["reference"]
        counts = ", ".join(f"{k} {int((v['predictions'] == splits.y_test).sum())}" for k, v in runs.items())
        progress("validate", f"{name:<22} {entry['bytes']:>8} B  accuracy {r['accuracy']:.2%}  "
                             f"agreement {r['agreement_with_float']:.2%}  correct: {counts}")
    rgb, int8 = results[RGB_ARTIFACT]["predictions"], results["model_int8.tflite"]["predictions"]
    rgb_same = float((rgb == int8).mean())
    failures = parity.gate(results, ref_acc, cfg.gate)
    if rgb_same < 1.0 - cfg.gate.max_rgb_disagreement:
        failures.append(f"{RGB_ARTIFACT}: top-1 agreement with model_int8.tflite {rgb_same:.2%} on gray images fed "
                        f"as RGB (gate: at least {1.0 - cfg.gate.max_rgb_disagreement:.2%})")

    progress("calibrate", "temperature per artifact, fitted on the validation split")
    for entry in entries:
        if entry["file"] == RGB_ARTIFACT:      # MediaPipe applies no temperature; its scores stay raw
            continue
        val_probs = parity.evaluate(out / entry["file"], splits.x_val, splits.y_val, val_ref)["probs"]
        entry["calibration"] = temperature.calibrate(val_probs, splits.y_val, results[entry["file"]]["probs"],
                                                   splits.y_test)
        c = entry["calibration"]
        progress("calibrate", f"{entry['file']:<20} T {c['temperature']:.3f}  test ECE "
                              f"{c['test_ece_before']:.2%} → {c['test_ece_after']:.2%}")
    int8 = results["model_int8.tflite"]
    calibration_curves = {
        "raw": temperature.reliability(int8["probs"], splits.y_test),
        "calibrated": temperature.reliability(int8_tflite_calibrated(int8["probs"], entries), splits.y_test)}
    # Figures are kept at full precision in the gate but rounded to 4 places in the manifest; the
    # exact count of correct answers is kept too, so a re-evaluation can be compared exactly.
    for entry in entries:
        entry["correct"] = int((results[entry["file"]]["predictions"] == splits.y_test).sum())
        # What `edge-classify` on the first 1,000 test images (`python -m pipeline pngs --limit 1000`) must count.
        entry["correct_first_1000"] = int((results[entry["file"]]["predictions"][:1000] == splits.y_test[:1000]).sum())
    manifest.update(
        rgb_model={"file": RGB_ARTIFACT, "for": "MediaPipe Tasks ImageClassifier and other RGB clients",
                   "input": "uint8 RGB (1, 28, 28, 3), 0..255; luma and normalization inside the graph",
                   "agreement_with_model_int8_tflite": round(rgb_same, 4)},
        onnx_opencv={"what": "graph rewrites so OpenCV DNN 4.x returns (N, 10); onnxruntime's numbers unchanged",
                     **opencv},
        test_images=int(len(splits.y_test)),
        float_reference={"accuracy": round(ref_acc, 4), "unpruned_accuracy": round(float_acc, 4),
                         "params": int(pruned.count_params()), "macs": int(models.macs(pruned)),
                         "what": "the pruned tf_keras model every artifact was converted from"
                                 + ("" if adapted is None else ", adapted on real photos")},
        pruning={k: v for k, v in prune_info.items() if k != "history"},
        onnx_int8={"chosen": best, "candidates": choice,
                   "why": (f"the one OpenCV DNN and other clients read correctly; onnxruntime's QDQ model ships only if it "
                           f"agrees with the float model better by more than {ONNX_TF2ONNX_MARGIN:.1%} on the validation split"
                           if best.startswith("tf2onnx") else
                           f"it agrees with the float model better than tf2onnx's by more than {ONNX_TF2ONNX_MARGIN:.1%} on the "
                           "validation split; OpenCV DNN may not read it (python -m pipeline compat)")},
        gate={"max_drop_pp": cfg.gate.max_drop_pp, "min_agreement": cfg.gate.min_agreement,
              "passed": not failures, "failures": failures},
        tools=onnx_export.tool_versions(),
        sizes={"unpruned_float_tflite": unpruned_size},
        photos_train=None if adapted is None else photo_variants.describe(adapted["photos"], adapted["info"]),
    )
    if imported is not None:
        manifest["import"] = imported.info
        manifest["device_cost"] = device_cost.rows(cfg, splits, model, pruned, float_acc, results, out, progress)
        unpruned_tflite.unlink()
    for file in report.SECTIONS:              # `compare` results stay with the release until re-run
        if (Path(cfg.export_dir) / file).exists():
            shutil.copy(Path(cfg.export_dir) / file, out / file)
    (out / "labels.txt").write_text("\n".join(fashion_mnist.CLASS_NAMES) + "\n")
    plots = report.training_plots(out, splits, history, ref_probs)
    plots["reliability"] = report.reliability_plot(calibration_curves, out / report.PLOTS_EXTRA["reliability"])
    write_json(out / "manifest.json", manifest)       # the temperatures, which the photo run below reads
    before = None
    if adapted is not None:                # the Fashion-MNIST-only model, measured the same way, not shipped
        before = out / "fashion_mnist_only_int8.tflite"
        before.write_bytes(tflite.to_tflite_int8(adapted["model"], calib))
    measure_photos(out, manifest, real_photos.find_dev_set(cfg.data.photos_dir), before)
    if before is not None:
        before.unlink()
    report.write_report(out, manifest, plots)
    write_json(out / "manifest.json", manifest)
    return manifest


def measure_photos(out: Path, manifest: dict, dev: Path | None, fmnist_only: Path | None = None) -> None:
    """The real-photo stage: the int8 TFLite model on the dev photos into `manifest` ("real_photos"),
    with the contact sheet and the confusion plot written into `out`; and, when the release was adapted
    on real photos, the same figures of the int8 model from before (`fmnist_only`), side by side."""
    if dev is None:
        progress("photos", "no real-photos-dev folder found ($FASHION_EDGE_PHOTOS): skipped")
        return
    before = None
    if fmnist_only is not None:
        before = real_photos.public(real_photos.evaluate(fmnist_only, dev, verify=False))
        progress("photos", f"Fashion-MNIST-only int8 model on the real photos: top-1 {before['accuracy']:.2%}")
    r = real_photos.evaluate(out / "model_int8.tflite", dev)
    progress("photos", f"model_int8.tflite on {r['photos']} real photos ({dev}): top-1 {r['accuracy']:.2%}")
    real_photos.contact_sheet(r, fashion_mnist.CLASS_NAMES, out / report.PLOTS_EXTRA["contact_sheet"])
    report.confusion_plot(r["_y"], r["_pred"], out / report.PLOTS_EXTRA["photo_confusion"],
                          title="Confusion matrix (real photos, int8 TFLite)")
    manifest["real_photos"] = {"model": "model_int8.tflite", "conversion_commit": git_commit(), **real_photos.public(r)}
    if before is not None:
        manifest["real_photos"]["fashion_mnist_only"] = before


def remeasure_photos(target: Path, photos_dir: str | None = None) -> dict:
    """Re-run only the real-photo stage on the release in `target` (after a change to the photo conversion,
    which does not touch the models): manifest, report and plots are rewritten in a staging copy that
    replaces `target` by rename, as an export does. Returns the new manifest's "real_photos"."""
    target = Path(target)
    recover(target)
    if not (target / "manifest.json").is_file():
        raise DataError(f"{target / 'manifest.json'}: no release here; run `make export` first")
    if photos_dir is not None and not (Path(photos_dir) / "MANIFEST.tsv").is_file():
        raise DataError(f"{photos_dir}: not a real-photos folder (no MANIFEST.tsv in it)")
    dev = real_photos.find_dev_set(photos_dir)
    if dev is None:
        raise DataError("no real-photos-dev folder (with a MANIFEST.tsv): give --photos DIR or set $FASHION_EDGE_PHOTOS")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-staging-", dir=target.parent))
    try:
        shutil.copytree(target, staging, dirs_exist_ok=True)
        manifest = json.loads((staging / "manifest.json").read_text())
        measure_photos(staging, manifest, dev)
        plots = {k: staging / v for k, v in {**report.PLOTS, "reliability": report.PLOTS_EXTRA["reliability"]}.items()
                 if (staging / v).exists()}
        report.write_report(staging, manifest, plots)
        write_json(staging / "manifest.json", manifest)
        promote(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest["real_photos"]

