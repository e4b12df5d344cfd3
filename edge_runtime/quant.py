"""The one place that knows how int8/uint8 tensors map to real numbers (affine quantization)."""

from __future__ import annotations

import numpy as np

QuantParams = tuple[float, int]  # (scale, zero_point): real = (q - zero_point) * scale


def quantize(x: np.ndarray, params: QuantParams, dtype: type) -> np.ndarray:
    """Real values → q = clip(round(x / scale) + zero_point) in the range of `dtype`.

    Rounds half to even (numpy, and ONNX QuantizeLinear); ties are vanishingly rare for image data.
    """
    scale, zero_point = params
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(x, np.float32) / np.float32(scale)) + np.float32(zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, params: QuantParams) -> np.ndarray:
    """Quantized values → real float32 values (q − zero_point) · scale."""
    scale, zero_point = params
    return ((q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32 (for models whose last layer outputs logits)."""
    z = logits.astype(np.float32) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


# Smallest probability taken seriously when rescaling: an int8 softmax output has steps of 1/256.
PROB_FLOOR = 1.0 / 512


def temperature_scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities p = softmax(z) → softmax(z / T), computed from p alone: log p = z − const.

    T > 1 softens over-confident scores, T < 1 sharpens under-confident ones; T = 1 is the identity.
    The ranking of classes never changes (ties stay ties)."""
    if temperature == 1.0:
        return np.asarray(probs, np.float32)
    return softmax(np.log(np.maximum(np.asarray(probs, np.float32), PROB_FLOOR)) / np.float32(temperature))
