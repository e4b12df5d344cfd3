"""`make export`: the chain, one call per stage in the order they run.

data → model (train ours, or import the user's) → prune → adapt on real photos → int8 representative data →
TFLite → ONNX → metadata → parity gate → temperature scaling → (imported model: device cost) → real photos →
manifest and report → promote. Each stage lives in the subpackage named for it and returns a value; this
module only calls them. Everything is written into a staging folder beside `exported/`, and only a run whose
every artifact passes the parity gate replaces `exported/`, by rename: a failed or killed run leaves the
previous release byte-identical.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from pipeline.config import Config
from pipeline.data import fashion_mnist
from pipeline.evaluate import device_cost, parity, real_photos, temperature
from pipeline.keras_import import importer
from pipeline.mcu import microcontroller
from pipeline.quantize import onnx_choice, representative, tflite
from pipeline.release import manifest, metadata, promote, report
from pipeline.release.provenance import git_commit, gzip_bytes, tool_versions
from pipeline.train import adapt, fit, models, photo_variants, prune


def progress(stage: str, message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {stage}: {message}", file=sys.stderr, flush=True)


def accuracy(model, x, y, cfg: Config) -> float:
    return float((fit.predict(model, x, cfg).argmax(1) == y).mean())


def run(cfg: Config) -> dict:
    """Run the whole chain for `cfg`; return the manifest of the promoted release."""
    started = time.perf_counter()
    target = Path(cfg.export_dir)
    promote.recover(target)

    progress("data", "loading Fashion-MNIST")
    splits = fashion_mnist.load(cfg)
    progress("data", splits.describe())

    if cfg.keras_model.path:                      # the user's model instead of training ours
        imported = importer.import_model(cfg, splits, progress)
        cfg = imported.cfg                        # its normalization and origin, for every stage after this
        model, history, model_key = imported.model, {}, imported.key
    else:
        imported = None
        tail = f", then {cfg.prune.epochs} pruning, on one schedule" if cfg.prune.enabled else ""
        progress("train", f"{cfg.train.model}, {cfg.train.epochs} epochs{tail} (profile {cfg.profile})")
        model, history, _ = fit.train_or_load(cfg, splits)
        model_key = fit.cache_key(cfg)
    float_acc = accuracy(model, splits.x_test, splits.y_test, cfg)
    progress("import" if imported else "train", f"float Keras test accuracy {float_acc:.2%} ({model.count_params()} "
                                                f"params{', before pruning' if cfg.prune.enabled else ''})")

    progress("prune", f"target sparsity {cfg.prune.target_sparsity:.0%}, {cfg.prune.epochs} epochs"
                      + (" (Adam, cosine to 0: the imported model's fine-tune)" if imported else "")
             if cfg.prune.enabled else "off (--no-prune): the model ships as it is")
    pruned, pruning = prune.prune_or_load(model, cfg, splits, model_key)
    if imported and cfg.prune.enabled:            # no training curves of ours: show the fine-tune's
        history = pruning.get("history", {})
    pruning = {**{k: v for k, v in pruning.items() if k != "history"},
               # measured from both models, never taken from a cache: what pruning buys once compressed
               "kernel_gzip_bytes_before": prune.kernel_gzip_bytes(model),
               "kernel_gzip_bytes_after": prune.kernel_gzip_bytes(pruned)}

    photo_set = photo_variants.load(cfg)
    fmnist_only, adapted = pruned, None
    if photo_set is None:
        progress("adapt", f"{photo_variants.why_none(cfg)}: the Fashion-MNIST-only model ships")
    else:
        progress("adapt", f"{len(photo_set.paths)} real photos from {photo_set.folder} ({photo_set.counts()}): "
                          f"{cfg.photos_train.epochs} epochs, {cfg.photos_train.share:.0%} of every batch")
        pruned, adapted = adapt.adapt_or_load(pruned, cfg, splits, photo_set, prune.cache_key(cfg, model_key))
        adapted = {**adapted, "fashion_mnist_only_test_accuracy":
                   round(accuracy(fmnist_only, splits.x_test, splits.y_test, cfg), 4)}
    ref_probs = fit.predict(pruned, splits.x_test, cfg)
    ref_pred, val_ref = ref_probs.argmax(1), fit.predict(pruned, splits.x_val, cfg).argmax(1)
    ref_acc = float((ref_pred == splits.y_test).mean())
    progress("adapt" if adapted else "prune", f"sparsity {prune.kernel_sparsity(pruned):.1%}, float Keras test "
                                              f"accuracy {ref_acc:.2%} (the reference every artifact is gated on)")

    with promote.staging(target) as out:
        progress("quantize", f"TFLite float32 and full-integer int8, {cfg.quant.calibration_size} representative "
                             "training images")
        calibration = representative.calibration_images(cfg, splits)
        io = tflite.convert(pruned, calibration, cfg.data.mean, cfg.data.std, out)
        unpruned = out / "unpruned_float.tflite"  # measured for the report (and an import's cost), not shipped
        unpruned.write_bytes(tflite.to_tflite_float(model))
        unpruned_size = {"bytes": unpruned.stat().st_size, "gzip_bytes": gzip_bytes(unpruned)}

        progress("onnx", "float (tf2onnx from Keras) and two int8 candidates")
        onnx = onnx_choice.convert_onnx(pruned, out, cfg, calibration, io["model_int8.tflite"],
                                        (splits.x_val, splits.y_val, val_ref), manifest.minimal(cfg), progress)
        io.update(onnx.io)

        progress("metadata", "labels and normalization into every artifact (TFLite Metadata, ONNX metadata_props)")
        metadata.write_all(cfg, out, list(fashion_mnist.CLASS_NAMES), version=f"fashion-edge {git_commit()}")
        release = manifest.build(cfg, [manifest.artifact_entry(out, n, io[n]) for n in manifest.ALL_ARTIFACTS])

        progress("parity", f"every artifact in its runtime on {len(splits.y_test)} test images (each .tflite "
                           "twice: LiteRT's default XNNPACK kernels and its built-in reference kernels)")
        runs = parity.check_artifacts(out, release, splits.x_test, splits.y_test, ref_pred, ref_acc, cfg.gate,
                                      progress)   # raises GateError: nothing below runs, nothing is promoted

        progress("temperature", "a temperature per artifact, fitted on the validation split")
        reliability = temperature.fit_artifacts(out, release, splits.x_val, splits.y_val, val_ref, runs,
                                                splits.y_test, progress)
        progress("mcu", "model_int8.tflite in TensorFlow Lite Micro: parity, arena, flash, C source" if cfg.mcu.enabled
                 else "skipped (--no-mcu)")
        micro = microcontroller.check_release(out, release, splits.x_test, splits.y_test, cfg.mcu.min_agreement,
                                              cfg.mcu.require, progress) if cfg.mcu.enabled else None
        cost = None
        if imported:
            cost = device_cost.measure_cost(cfg, splits, model, pruned, float_acc, runs, out, progress)
        unpruned.unlink()

        plots = report.training_plots(out, splits, history, ref_probs)
        plots["reliability"] = report.reliability_plot(reliability, out / report.PLOTS_EXTRA["reliability"])
        before = None
        if adapted:                               # the Fashion-MNIST-only model, measured the same way, not shipped
            before = out / "fashion_mnist_only_int8.tflite"
            before.write_bytes(tflite.to_tflite_int8(fmnist_only, calibration))
        dev = real_photos.find_dev_set(cfg.data.photos_dir, cfg.search.photos_dev)
        photos = real_photos.measure(out, release, dev, progress, before)
        if before:
            before.unlink()

        manifest.update(
            release,
            rgb_model={"file": manifest.RGB_ARTIFACT, "for": "MediaPipe Tasks ImageClassifier and other RGB clients",
                       "input": "uint8 RGB (1, 28, 28, 3), 0..255; luma and normalization inside the graph",
                       "agreement_with_model_int8_tflite": round(parity.rgb_agreement(runs), 4)},
            onnx_opencv={"what": "graph rewrites so OpenCV DNN 4.x returns (N, 10); onnxruntime's numbers unchanged",
                         **onnx.opencv},
            test_images=int(len(splits.y_test)),
            float_reference={"accuracy": round(ref_acc, 4), "unpruned_accuracy": round(float_acc, 4),
                             "params": int(pruned.count_params()), "macs": int(models.macs(pruned)),
                             "what": "the pruned tf_keras model every artifact was converted from"
                                     + (", adapted on real photos" if adapted else "")},
            pruning=pruning,
            onnx_int8=onnx.int8_choice,
            gate={"max_drop_pp": cfg.gate.max_drop_pp, "min_agreement": cfg.gate.min_agreement,
                  "passed": True, "failures": []},
            tools=tool_versions(),
            sizes={"unpruned_float_tflite": unpruned_size},
            photos_train=photo_variants.describe(photo_set, adapted) if adapted else None,
            real_photos=photos,
            mcu=micro,
            **({"import": imported.info, "device_cost": cost} if imported else {}))
        report.copy_sections(target, out)         # `compare` results stay with the release until re-run
        (out / "labels.txt").write_text("\n".join(fashion_mnist.CLASS_NAMES) + "\n")
        report.write_report(out, release, plots)
        manifest.write(out, release)

        progress("promote", f"{out.name} → {target}")
        had_compat = (target / "compat.md").is_file()
        promote.promote(out, target)
    if had_compat:
        progress("compat", f"the previous compat.md and compat.json measured the previous artifacts and are not in "
                           f"the new {target}: run `make compat` (python -m pipeline compat --exported {target})")
    progress("done", f"wall time {time.perf_counter() - started:.0f} s")
    return release
