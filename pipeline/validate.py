"""Every artifact in its real runtime (edge_runtime: LiteRT or onnxruntime) → parity table and gate."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import GateConfig


def evaluate(model_path: Path, x_uint8: np.ndarray, y: np.ndarray, reference_pred: np.ndarray,
             num_threads: int = 2) -> dict:
    """Accuracy, top-1 agreement with the float Keras model, and per-class accuracy of one artifact.

    Runs through edge_runtime.Classifier, i.e. exactly the code and manifest a device uses.
    """
    from edge_runtime.classifier import Classifier
    clf = Classifier(str(model_path), num_threads=num_threads, calibrated=False)
    probs = clf.scores(x_uint8)
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
        if drop_pp > g.max_drop_pp:
            failures.append(f"{name}: accuracy {r['accuracy']:.2%} is {drop_pp:.2f} pp below the float model's "
                            f"{reference_accuracy:.2%} (gate: at most {g.max_drop_pp} pp)")
        if r["agreement_with_float"] < g.min_agreement:
            failures.append(f"{name}: top-1 agreement with the float model {r['agreement_with_float']:.2%} "
                            f"(gate: at least {g.min_agreement:.2%})")
    return failures
