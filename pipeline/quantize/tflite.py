"""TFLite float32, full-integer int8 (int8 input and output) and the RGB int8 model for MediaPipe, from the
pruned tf_keras model and the representative data (pipeline/quantize/representative.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pipeline.release.manifest import RGB_ARTIFACT


def to_tflite_float(model: keras.Model) -> bytes:
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _full_integer(model: keras.Model, representative_images: np.ndarray, input_type, output_type=None) -> bytes:
    """The converter every int8 artifact shares: int8 weights and activations, the scales set by running
    `representative_images` one at a time; the input (and, when given, the output) tensor of `*_type`."""
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative():
        for img in representative_images:
            yield [img[None]]

    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = input_type
    if output_type is not None:
        conv.inference_output_type = output_type
    return conv.convert()


def to_tflite_int8(model: keras.Model, calibration: np.ndarray) -> bytes:
    """Full-integer quantization: int8 weights and activations, int8 input and output tensors."""
    return _full_integer(model, calibration, tf.int8, tf.int8)


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


# ITU-R BT.601 luma (0.299, 0.587, 0.114, what Pillow's convert("L") uses) rounded to weights int8
# stores exactly: per-channel quantization scales the largest to 127, and 0.299 and 0.114 would round to
# 65 and 25 of it; with these the sum is exactly 1 after quantization, so a gray pixel keeps its value
# and the RGB model answers like model_int8.tflite (a 0.3 % gain error flipped answers).
LUMA = (65 / 217, 127 / 217, 25 / 217)


def rgb_model(model: keras.Model, mean: float, std: float) -> keras.Model:
    """`model` behind a 1x1 convolution that takes 0..255 RGB and gives what `model` expects:
    (luma/255 - mean) / std. One op, so the int8 graph gains one quantized convolution."""
    to_input = keras.layers.Conv2D(1, 1, name="rgb_to_normalized_gray")
    inp = keras.Input((28, 28, 3), name="image")
    out = model(to_input(inp))
    wrapped = keras.Model(inp, out, name=f"{model.name}_rgb")
    weights = np.array(LUMA, np.float32).reshape(1, 1, 3, 1) / (255.0 * std)
    to_input.set_weights([weights, np.array([-mean / std], np.float32)])
    return wrapped


def to_tflite_int8_rgb(model: keras.Model, calibration: np.ndarray, mean: float, std: float) -> bytes:
    """The MediaPipe-ready model: uint8 RGB input (1, 28, 28, 3), int8 inside, float32 probabilities out.

    MediaPipe Tasks' ImageClassifier takes only uint8 or float32 RGB(A) input, so grayscale and
    normalization move into the graph. `calibration` is the standardized representative data; it is
    turned back into 0..255 RGB here."""
    pixels = np.clip(np.round((calibration * std + mean) * 255.0), 0, 255).astype(np.float32)
    rgb = np.repeat(pixels, 3, axis=-1)
    return _full_integer(rgb_model(model, mean, std), rgb, tf.uint8)   # float32 probabilities out


def convert(model: keras.Model, calibration: np.ndarray, mean: float, std: float, out: Path) -> dict[str, dict]:
    """The three .tflite artifacts of `model` written into `out`; returns each file's input/output tensors."""
    (out / "model_float.tflite").write_bytes(to_tflite_float(model))
    (out / "model_int8.tflite").write_bytes(to_tflite_int8(model, calibration))
    (out / RGB_ARTIFACT).write_bytes(to_tflite_int8_rgb(model, calibration, mean, std))
    return {name: io_quantization(out / name) for name in ("model_float.tflite", "model_int8.tflite", RGB_ARTIFACT)}
