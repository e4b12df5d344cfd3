"""The ONNX stage: float ONNX (tf2onnx from Keras), two int8 candidates, and the choice of the one that ships.

The candidates: tf2onnx on the int8 .tflite (TFLite's integers, int8 input) and onnxruntime's static QDQ
quantization of the float ONNX. tf2onnx's is the one other clients read: on the default release OpenCV DNN
4.14 got 61 % right with the QDQ model and OpenCV 5.0 refused it (int8 input), while both match onnxruntime
on tf2onnx's (`python -m pipeline compat`). So the QDQ model ships only when it agrees with the float model
better by more than `cfg.quant.onnx_qdq_margin` on the VALIDATION split (the test set is for the end).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.evaluate import parity
from pipeline.quantize import onnx_export

TF2ONNX = "tf2onnx on the int8 .tflite"
QDQ = "onnxruntime static QDQ"
FLOAT_IO = {"input": {"dtype": "float32"}, "output": {"dtype": "float32"}}


@dataclass
class OnnxRelease:
    """What the ONNX stage made: each file's input/output tensors, the int8 choice and the OpenCV rewrites."""

    io: dict[str, dict]           # model_float.onnx, model_int8.onnx → {"input", "output"}
    int8_choice: dict             # the manifest's "onnx_int8": chosen, candidates, why
    opencv: dict[str, list[str]]  # file → the graph rewrites for OpenCV DNN 4.x


def choose(agreements: dict[str, float], margin: float) -> str:
    """tf2onnx's candidate unless the other agrees better by more than `margin`."""
    top = max(agreements.values())
    return TF2ONNX if agreements[TF2ONNX] >= top - margin else max(agreements, key=agreements.get)


def convert_onnx(model, out: Path, cfg: Config, calibration: np.ndarray, int8_tflite_io: dict,
                 validation, manifest: dict, log) -> OnnxRelease:
    """model_float.onnx and model_int8.onnx in `out`. `validation` is (x_val, y_val, the float model's
    answers); `manifest` gives edge_runtime the normalization to run the candidates with."""
    float_onnx = onnx_export.to_onnx_float(model, out / "model_float.onnx", cfg.quant.onnx_opset)
    candidates = {
        TF2ONNX: onnx_export.to_onnx_from_tflite(out / "model_int8.tflite", out / "cand_tflite.onnx",
                                                 cfg.quant.onnx_opset, int8_tflite_io),
        QDQ: onnx_export.to_onnx_qdq(float_onnx, out / "cand_qdq.onnx", calibration),
    }
    for path in [float_onnx, *candidates.values()]:
        onnx_export.check(path)
    x_val, y_val, val_ref = validation
    figures = {}
    for label, path in candidates.items():
        r = parity.evaluate(path, x_val, y_val, val_ref, manifest=manifest)
        figures[label] = {"val_agreement": round(r["agreement_with_float"], 4), "val_accuracy": round(r["accuracy"], 4)}
        log("onnx", f"int8 candidate {label}: validation agreement {r['agreement_with_float']:.2%}")
    best = choose({k: v["val_agreement"] for k, v in figures.items()}, cfg.quant.onnx_qdq_margin)
    os.replace(candidates[best], out / "model_int8.onnx")
    for path in candidates.values():
        path.unlink(missing_ok=True)
    margin = f"{cfg.quant.onnx_qdq_margin:.1%}"
    why = (f"the one OpenCV DNN and other clients read correctly; onnxruntime's QDQ model ships only if it agrees "
           f"with the float model better by more than {margin} on the validation split" if best == TF2ONNX else
           f"it agrees with the float model better than tf2onnx's by more than {margin} on the validation split; "
           "OpenCV DNN may not read it (python -m pipeline compat)")
    opencv = {name: onnx_export.for_opencv(out / name) for name in ("model_float.onnx", "model_int8.onnx")}
    for name in opencv:
        onnx_export.check(out / name)
    log("onnx", "rewritten for OpenCV DNN 4.x: " + "; ".join(f"{n}: {len(c)} change(s)" for n, c in opencv.items()))
    return OnnxRelease(io={"model_float.onnx": FLOAT_IO,
                           "model_int8.onnx": int8_tflite_io if best == TF2ONNX else FLOAT_IO},
                       int8_choice={"chosen": best, "candidates": figures, "why": why},
                       opencv=opencv)
