"""Every artifact in its real runtime (edge_runtime: LiteRT or onnxruntime) → parity table and gate."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import GateConfig


KERNELS = ("default", "reference")   # LiteRT's default (XNNPACK delegate) and its built-in kernels


def evaluate(model_path: Path, x_uint8: np.ndarray, y: np.ndarray, reference_pred: np.ndarray,
             num_threads: int = 2, kernels: str = "default") -> dict:
    """Accuracy, top-1 agreement with the float Keras model, and per-class accuracy of one artifact.

    Runs through edge_runtime.Classifier, i.e. exactly the code and manifest a device uses; a .tflite
    on `kernels` "reference" runs without the default XNNPACK delegate (BUILTIN_WITHOUT_DEFAULT_DELEGATES).
    """
    from edge_runtime.classifier import Classifier
    clf = Classifier(str(model_path), num_threads=num_threads, calibrated=False,
                     reference_kernels=kernels == "reference")
    return _figures(clf.scores(x_uint8), y, reference_pred)


def evaluate_rgb(model_path: Path, x_uint8: np.ndarray, y: np.ndarray, reference_pred: np.ndarray,
                 num_threads: int = 2, kernels: str = "default") -> dict:
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
