"""ONNX float (tf2onnx from the tf_keras model) and ONNX int8 (two candidates, picked by parity)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import tensorflow as tf
import tf2onnx
import tf_keras as keras


def to_onnx_float(model: keras.Model, path: Path, opset: int) -> Path:
    spec = [tf.TensorSpec((None, 28, 28, 1), tf.float32, name="input")]
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, output_path=str(path))
    return path


def to_onnx_from_tflite(tflite_path: Path, path: Path, opset: int, quant: dict) -> Path:
    """tf2onnx on the full-int8 .tflite: keeps TFLite's integer numbers; the input stays int8.

    onnxruntime does not expose a graph input's quantization, so scale and zero point go into
    the model's metadata, where edge_runtime reads them.
    """
    model, _ = tf2onnx.convert.from_tflite(str(tflite_path), opset=opset)
    meta = {"input_scale": quant["input"]["scale"], "input_zero_point": quant["input"]["zero_point"],
            "output_scale": quant["output"]["scale"], "output_zero_point": quant["output"]["zero_point"]}
    onnx.helper.set_model_props(model, {k: repr(v) for k, v in meta.items()})
    onnx.save(model, str(path))
    return path


def to_onnx_qdq(float_path: Path, path: Path, calibration: np.ndarray) -> Path:
    """onnxruntime static QDQ quantization of the float ONNX (float input; int8 inside)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter({"input": img[None]} for img in calibration)

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(float_path), str(path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True)
    return path


def check(path: Path) -> None:
    """The ONNX checker with full shape and type inference."""
    onnx.checker.check_model(str(path), full_check=True)


def tool_versions() -> dict:
    import ai_edge_litert
    import onnxruntime
    import tensorflow_model_optimization as tfmot
    import tf_keras
    versions = {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__, "tfmot": tfmot.__version__,
                "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                "numpy": np.__version__}
    try:
        from importlib.metadata import version
        versions["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - a version string is informational only
        versions["ai_edge_litert"] = getattr(ai_edge_litert, "__version__", "unknown")
    return versions

