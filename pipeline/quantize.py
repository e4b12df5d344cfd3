"""TFLite float32 and full-integer int8 (int8 input and output), calibrated on the training split."""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from .config import Config
from .train import standardize


def calibration_images(cfg: Config, splits) -> np.ndarray:
    """A seeded, class-balanced sample of TRAINING images, standardized: the representative data."""
    rng = np.random.default_rng(cfg.seed + 2)
    n = min(cfg.quant.calibration_size, len(splits.y_train))
    per_class = [rng.permutation(np.flatnonzero(splits.y_train == c)) for c in range(10)]
    idx = np.concatenate([p[: max(1, n // 10)] for p in per_class])[:n]
    return standardize(splits.x_train[idx], cfg.data.mean, cfg.data.std)


def to_tflite_float(model: keras.Model) -> bytes:
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def to_tflite_int8(model: keras.Model, calibration: np.ndarray) -> bytes:
    """Full-integer quantization: int8 weights and activations, int8 input and output tensors."""
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative():
        for img in calibration:
            yield [img[None]]

    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def io_quantization(tflite_path) -> dict:
    """dtype, scale and zero point of the input and output tensors, read back from the file."""
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=str(tflite_path))

    def describe(d):
        scale, zp = d["quantization"]
        out = {"dtype": np.dtype(d["dtype"]).name, "shape": [int(v) for v in d["shape_signature"]]}
        if scale:
            out.update(scale=float(scale), zero_point=int(zp))
        return out

    return {"input": describe(it.get_input_details()[0]), "output": describe(it.get_output_details()[0])}
