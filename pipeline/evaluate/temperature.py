"""Temperature scaling: confidence you can act on, one temperature per artifact fitted on the validation
split; ECE and NLL on the test split before and after."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.quant import PROB_FLOOR, temperature_scale
from pipeline.release.manifest import RGB_ARTIFACT

BINS = 15


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.maximum(probs[np.arange(len(y)), y], PROB_FLOOR)).mean())


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The T minimising the negative log-likelihood of `temperature_scale(probs, T)` (grid, then refine)."""
    grid = np.exp(np.linspace(np.log(0.2), np.log(5.0), 81))
    best = min(grid, key=lambda t: nll(temperature_scale(probs, t), y))
    fine = best * np.exp(np.linspace(-0.05, 0.05, 21))
    return float(min(fine, key=lambda t: nll(temperature_scale(probs, t), y)))


def ece(probs: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: |accuracy − confidence| averaged over equal-width confidence bins."""
    conf, right = probs.max(1), probs.argmax(1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(right[inside].mean() - conf[inside].mean())
    return float(total)


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> list[tuple[float, float, int]]:
    """(mean confidence, accuracy, count) per equal-width bin with any images in it."""
    conf, right = probs.max(1), probs.argmax(1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    return [(float(conf[which == b].mean()), float(right[which == b].mean()), int((which == b).sum()))
            for b in range(bins) if (which == b).any()]


def fit_on_validation(val_probs: np.ndarray, y_val: np.ndarray, test_probs: np.ndarray, y_test: np.ndarray) -> dict:
    """Fit T on the validation split; report ECE and NLL on the test split before and after."""
    t = fit_temperature(val_probs, y_val)
    after = temperature_scale(test_probs, t)
    return {"temperature": round(t, 4), "fitted_on": f"validation split ({len(y_val)} images)",
            "test_ece_before": round(ece(test_probs, y_test), 4), "test_ece_after": round(ece(after, y_test), 4),
            "test_nll_before": round(nll(test_probs, y_test), 4), "test_nll_after": round(nll(after, y_test), 4)}


def fit_artifacts(out: Path, manifest: dict, x_val: np.ndarray, y_val: np.ndarray, val_ref: np.ndarray,
                  test_runs: dict[str, dict], y_test: np.ndarray, log) -> dict[str, list]:
    """A temperature per artifact (not the RGB model: MediaPipe applies none), fitted on the validation split,
    into its manifest entry as "calibration" (the name edge_runtime reads). Returns model_int8.tflite's
    reliability curves on the test images, raw and scaled, for the report."""
    from pipeline.evaluate import parity
    for entry in manifest["artifacts"]:
        if entry["file"] == RGB_ARTIFACT:
            continue
        val_probs = parity.evaluate(out / entry["file"], x_val, y_val, val_ref, manifest=manifest)["probs"]
        c = entry["calibration"] = fit_on_validation(val_probs, y_val, test_runs[entry["file"]]["probs"], y_test)
        log("temperature", f"{entry['file']:<20} T {c['temperature']:.3f}  test ECE "
                           f"{c['test_ece_before']:.2%} → {c['test_ece_after']:.2%}")
    int8 = test_runs["model_int8.tflite"]["probs"]
    t = next(e for e in manifest["artifacts"] if e["file"] == "model_int8.tflite")["calibration"]["temperature"]
    return {"raw": reliability(int8, y_test), "calibrated": reliability(temperature_scale(int8, t), y_test)}
