"""Training-time augmentation on batches of 28×28 images in [0, 1] (light garment on black).

`shift_and_flip` is the recipe's pad-2 random crop + horizontal flip. `photo` simulates what
edge_runtime's photo conversion hands the model on a real phone photo: the garment a little off
centre, scaled and rotated, lit differently (brightness, contrast, gamma, levels stretched), blurred,
noisy, blocky like a small JPEG, cut out by an imperfect mask (a grey box of background left around
it, or a bite taken out of it). Every op works on a whole batch: per-image maps were slower than the
model. Random numbers come from TensorFlow's global seed, so training stays repeatable.
"""
from __future__ import annotations

import math

import tensorflow as tf


def _per_image(shape_n, lo, hi):
    return tf.random.uniform([shape_n, 1, 1, 1], lo, hi)


def shift_and_flip(img: tf.Tensor, pad: int = 2) -> tf.Tensor:
    """Pad `pad` px of black, crop a random 28×28 window, flip left-right half the time."""
    n = tf.shape(img)[0]
    size = img.shape[1]
    padded = tf.pad(img, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    dy = tf.random.uniform([n], 0, 2 * pad + 1, dtype=tf.int32)
    dx = tf.random.uniform([n], 0, 2 * pad + 1, dtype=tf.int32)
    rows = dy[:, None] + tf.range(size)[None]                       # (n, 28)
    cols = dx[:, None] + tf.range(size)[None]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    out = tf.gather(out, cols, axis=2, batch_dims=1)
    flip = tf.random.uniform([n, 1, 1, 1]) < 0.5
    return tf.where(flip, tf.reverse(out, axis=[2]), out)


def _affine(img: tf.Tensor, n) -> tf.Tensor:
    """Random scale 0.75–1.1, rotation ±15°, shift ±3 px about the centre; outside is black."""
    scale = tf.random.uniform([n], 0.75, 1.1)
    angle = tf.random.uniform([n], -15.0, 15.0) * (math.pi / 180.0)
    tx, ty = tf.random.uniform([n], -3.0, 3.0), tf.random.uniform([n], -3.0, 3.0)
    c = (img.shape[1] - 1) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    # output (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2): the inverse map
    a2 = c - cos * (c + tx) + sin * (c + ty)
    b2 = c - sin * (c + tx) - cos * (c + ty)
    transforms = tf.stack([cos, -sin, a2, sin, cos, b2, tf.zeros([n]), tf.zeros([n])], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=img, transforms=transforms, output_shape=tf.shape(img)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")


def _blur(img: tf.Tensor) -> tf.Tensor:
    k = tf.constant([1.0, 2.0, 1.0]) / 4.0
    kernel = tf.reshape(k[:, None] * k[None, :], [3, 3, 1, 1])
    return tf.nn.conv2d(img, kernel, strides=1, padding="SAME")


def photo(img: tf.Tensor, share: float) -> tf.Tensor:
    """The phone-photo transform on a random `share` of the batch; the rest pass unchanged."""
    n = tf.shape(img)[0]
    size = img.shape[1]
    out = _affine(img, n)
    garment = tf.cast(out > 0.02, tf.float32)

    # Imperfect masks: a grey box of background left around the garment (a third of the images) ...
    yy = tf.range(size, dtype=tf.float32)[None, :, None, None]
    xx = tf.range(size, dtype=tf.float32)[None, None, :, None]
    y0, y1 = _per_image(n, 0, 8), _per_image(n, 20, 28)
    x0, x1 = _per_image(n, 0, 8), _per_image(n, 20, 28)
    box = tf.cast((yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1), tf.float32)
    level = _per_image(n, 0.05, 0.4) * tf.cast(_per_image(n, 0, 1) < 0.33, tf.float32)
    out = tf.maximum(out, box * level)
    # ... or a bite out of it (a quarter of the images): a random 6–12 px square set to black.
    by, bx, bs = _per_image(n, 0, 22), _per_image(n, 0, 22), _per_image(n, 6, 12)
    bite = tf.cast((yy >= by) & (yy < by + bs) & (xx >= bx) & (xx < bx + bs), tf.float32)
    bite *= tf.cast(_per_image(n, 0, 1) < 0.25, tf.float32)
    out *= 1.0 - bite

    # Lighting: levels of the garment stretched to a random floor..1 (what the device does to a
    # photo), gamma 0.5–2, contrast 0.6–1.4 about the garment's mean, brightness ±0.15.
    floor = _per_image(n, 0.0, 0.35)
    out = tf.where(garment > 0, floor + (1.0 - floor) * out, out)
    out = tf.pow(tf.clip_by_value(out, 1e-4, 1.0), tf.exp(_per_image(n, -0.7, 0.7)))
    m = tf.reduce_sum(out * garment, [1, 2, 3], keepdims=True) / (
        tf.reduce_sum(garment, [1, 2, 3], keepdims=True) + 1.0)
    out = tf.where(garment > 0, m + (out - m) * _per_image(n, 0.6, 1.4) + _per_image(n, -0.15, 0.15), out)

    # Optics and sensor: blur half the images, Gaussian noise σ 0–0.06, then 8-bit steps.
    out = tf.where(_per_image(n, 0, 1) < 0.5, _blur(out), out)
    out += tf.random.normal(tf.shape(out)) * _per_image(n, 0.0, 0.06)
    # Blocky like a small JPEG: average 2×2 blocks for a fifth of the images.
    blocky = tf.image.resize(tf.nn.avg_pool2d(out, 2, 2, "VALID"), [size, size], method="nearest")
    out = tf.where(_per_image(n, 0, 1) < 0.2, blocky, out)
    out = tf.round(tf.clip_by_value(out, 0.0, 1.0) * 255.0) / 255.0

    chosen = _per_image(n, 0, 1) < share
    return tf.where(chosen, out, img)
