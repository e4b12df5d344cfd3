"""The parity gate: every artifact in its real runtime (edge_runtime on LiteRT or onnxruntime; the RGB model in
LiteRT directly) on the test images, against the pruned float Keras model it was converted from."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import GateConfig
from pipeline.errors import GateError
from pipeline.release.manifest import RGB_ARTIFACT


KERNELS = ("default", "reference")   # LiteRT's default (XNNPACK delegate) and its built-in kernels


def evaluate(model_path: Path, x_uint8: np.ndarray, y: np.ndarray, reference_pred: np.ndarray,
             num_threads: int = 2, kernels: str = "default", manifest: dict | None = None) -> dict:
    """Accuracy, top-1 agreement with the float Keras model, and per-class accuracy of one artifact.

    Runs through edge_runtime.Classifier, i.e. exactly the code and manifest a device uses; a .tflite
    on `kernels` "reference" runs without the default XNNPACK delegate (BUILTIN_WITHOUT_DEFAULT_DELEGATES).
    """
    from edge_runtime.classifier import Classifier
    clf = Classifier(str(model_path), num_threads=num_threads, calibrated=False,
                     reference_kernels=kernels == "reference", manifest=manifest, verify=manifest is None)
    return _figures(clf.scores(x_uint8), y, reference_pred)


def evaluate_rgb(model_path: Path, x_uint8: np.ndarray, y: np.ndarray, reference_pred: np.ndarray,
                 num_threads: int = 2, kernels: str = "default", manifest: dict | None = None) -> dict:
    """The same figures for the MediaPipe-ready model: the gray images fed as uint8 RGB, as a camera
    frame would come. LiteRT directly: edge_runtime takes only 28x28x1 models."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if kernels == "reference" else OpResolverType.AUTO
    it = Interpreter(model_path=str(model_path), num_threads=num_threads, experimental_op_resolver_type=resolver)
    rgb = np.repeat(np.asarray(x_uint8, np.uint8)[..., None], 3, axis=-1)
    it.resize_tensor_input(it.get_input_details()[0]["index"], list(rgb.shape), strict=False)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], rgb)
    it.invoke()
    return _figures(it.get_tensor(it.get_output_details()[0]["index"]), y, reference_pred)


def _figures(probs: np.ndarray, y: np.ndarray, reference_pred: np.ndarray) -> dict:
    pred = probs.argmax(1)
    per_class = [float((pred[y == c] == c).mean()) if (y == c).any() else None for c in range(10)]
    return {"accuracy": float((pred == y).mean()),
            "agreement_with_float": float((pred == reference_pred).mean()),
            "per_class_accuracy": [None if v is None else round(v, 4) for v in per_class],
            "predictions": pred, "probs": probs}


def gate(results: dict[str, dict], reference_accuracy: float, g: GateConfig) -> list[str]:
    """The failures, one sentence each; an empty list means every artifact passed."""
    failures = []
    for name, r in results.items():
        drop_pp = (reference_accuracy - r["accuracy"]) * 100
        if drop_pp > g.max_drop_pp + 1e-9:        # 3 of 1,000 images is 0.3 pp, not 0.30000000000000027
            failures.append(f"{name}: accuracy {r['accuracy']:.2%} is {drop_pp:.2f} pp below the float model's "
                            f"{reference_accuracy:.2%} (gate: at most {g.max_drop_pp} pp)")
        if r["agreement_with_float"] < g.min_agreement:
            failures.append(f"{name}: top-1 agreement with the float model {r['agreement_with_float']:.2%} "
                            f"(gate: at least {g.min_agreement:.2%})")
    return failures


def check_artifacts(out: Path, manifest: dict, x_test: np.ndarray, y_test: np.ndarray, reference_pred: np.ndarray,
                    reference_accuracy: float, g: GateConfig, log) -> dict[str, dict]:
    """Run every artifact of `manifest` in `out` on the test images (each .tflite twice: LiteRT's default
    XNNPACK kernels and its built-in reference kernels, which round int8 differently and which tflite-runtime
    runs), write the figures into its manifest entry, and apply the gate: GateError naming every failure.
    Returns the runs by file (and "<file> (reference kernels)"), with their predictions and probabilities."""
    results = {}
    for entry in manifest["artifacts"]:
        name = entry["file"]
        kernels = KERNELS if entry["format"] == "tflite" else KERNELS[:1]
        run = evaluate_rgb if name == RGB_ARTIFACT else evaluate
        runs = {k: run(out / name, x_test, y_test, reference_pred, kernels=k, manifest=manifest) for k in kernels}
        r = results[name] = runs["default"]
        entry.update(accuracy=round(r["accuracy"], 4), agreement_with_float=round(r["agreement_with_float"], 4),
                     per_class_accuracy=r["per_class_accuracy"],
                     # rounded in the manifest, exact here: a re-evaluation can be compared exactly
                     correct=int((r["predictions"] == y_test).sum()),
                     # what `edge-classify` on the first 1,000 test images (`python -m pipeline pngs --limit 1000`) counts
                     correct_first_1000=int((r["predictions"][:1000] == y_test[:1000]).sum()))
        if entry["format"] == "tflite":
            entry["kernels"] = {k: {"correct": int((v["predictions"] == y_test).sum()), "accuracy": round(v["accuracy"], 4),
                                    "agreement_with_float": round(v["agreement_with_float"], 4)}
                                for k, v in runs.items()}
            results[f"{name} (reference kernels)"] = runs["reference"]
        counts = ", ".join(f"{k} {int((v['predictions'] == y_test).sum())}" for k, v in runs.items())
        log("parity", f"{name:<22} {entry['bytes']:>8} B  accuracy {r['accuracy']:.2%}  "
                      f"agreement {r['agreement_with_float']:.2%}  correct: {counts}")
    failures = gate(results, reference_accuracy, g)
    rgb_same = rgb_agreement(results)
    if rgb_same < 1.0 - g.max_rgb_disagreement:
        failures.append(f"{RGB_ARTIFACT}: top-1 agreement with model_int8.tflite {rgb_same:.2%} on gray images fed "
                        f"as RGB (gate: at least {1.0 - g.max_rgb_disagreement:.2%})")
    if failures:
        raise GateError("parity gate failed, the previous release is left untouched: " + "; ".join(failures))
    return results


def rgb_agreement(results: dict[str, dict]) -> float:
    """Top-1 agreement of the RGB model with model_int8.tflite on the same gray images."""
    return float((results[RGB_ARTIFACT]["predictions"] == results["model_int8.tflite"]["predictions"]).mean())
