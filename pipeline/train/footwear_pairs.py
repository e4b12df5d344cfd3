"""Synthetic phone photos of pairs of shoes seen from above, made from Fashion-MNIST footwear.

Real photos of footwear are a pair on the floor, shot from above; Fashion-MNIST shows one shoe from the
side, and the training photos hold no sandal and two sneakers. Converted by the runtime, a real pair is
two elongated light shapes side by side, which the model reads as Trouser or Bag (see the contact sheet).
These photos teach the shape: two Fashion-MNIST shoes of one class (a shoe and its mirror image, or two
shoes), stood on end, coloured and shaded by their own texture, on a floor of random colour, light and
noise, JPEG-compressed, and then converted by `edge_runtime.preprocess` like any photo.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

FOOTWEAR = (5, 7, 9)        # Sandal, Sneaker, Ankle boot


def _shoe(img28: np.ndarray, scale: float, angle: float, color: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An RGB shoe and its alpha (0..1), `scale` times larger, turned by `angle` degrees."""
    size = int(28 * scale)
    gray = Image.fromarray(img28).resize((size, size), Image.Resampling.BICUBIC)
    gray = gray.rotate(angle, Image.Resampling.BILINEAR, expand=True)
    g = np.asarray(gray, dtype=np.float32) / 255.0
    alpha = np.clip((g - 0.04) * 6, 0, 1)
    rows, cols = np.flatnonzero(alpha.max(1) > 0.5), np.flatnonzero(alpha.max(0) > 0.5)
    if len(rows) and len(cols):         # the shoe's own box: the pair stands side by side, not its canvases
        g, alpha = (v[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] for v in (g, alpha))
    rgb = color[None, None] * (0.35 + 0.65 * g[..., None])
    return rgb, alpha


def pair_photo(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A photo of shoes `a` and `b` (28×28 Fashion-MNIST images) side by side, seen from above."""
    scale = rng.uniform(5, 9)
    up = 90 if rng.random() < 0.5 else -90          # toes up or down, both the same way
    color = rng.uniform(0, 255, 3) if rng.random() < 0.7 else np.full(3, rng.uniform(0, 255))
    left = _shoe(a, scale, up + rng.normal(0, 8), color)
    right = _shoe(b, scale, up + rng.normal(0, 8), color)
    gap = max(0, int(left[0].shape[1] * rng.uniform(0.0, 0.35)))
    h = max(left[0].shape[0], right[0].shape[0])
    w = left[0].shape[1] + right[0].shape[1] + gap
    margin_x, margin_y = (int(max(w, h) * rng.uniform(0.1, 0.45)) for _ in range(2))
    H, W = h + 2 * margin_y, w + 2 * margin_x
    floor_rgb = rng.uniform(0, 255, 3) if rng.random() < 0.5 else np.full(3, rng.uniform(0, 255))
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    light = 1 + rng.uniform(-0.25, 0.25) * (xx / W - 0.5) + rng.uniform(-0.25, 0.25) * (yy / H - 0.5)
    canvas = floor_rgb[None, None] * light[..., None] + rng.normal(0, rng.uniform(2, 12), (H, W, 3))
    x = margin_x
    for rgb, alpha in (left, right):
        y = margin_y + (h - rgb.shape[0]) // 2 + int(rng.integers(-h // 12, h // 12 + 1))
        y = int(np.clip(y, 0, H - rgb.shape[0]))
        region = canvas[y : y + rgb.shape[0], x : x + rgb.shape[1]]
        region[:] = alpha[..., None] * rgb + (1 - alpha[..., None]) * region
        x += rgb.shape[1] + gap
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(40, 92)))
    return Image.open(io.BytesIO(buf.getvalue()))


def synthesize(x: np.ndarray, y: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` converted pair photos for each footwear class, from the training images `x`, `y`:
    (N, 28, 28) uint8 model inputs exactly as the device makes them, and their labels. `seed` is the
    stage's own (the run's seed + `cfg.seeds.footwear_pairs`)."""
    from edge_runtime.errors import EdgeError
    from edge_runtime.preprocess import to_model_input
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in FOOTWEAR:
        idx = np.flatnonzero(y == c)
        made = 0
        while made < per_class:
            a = x[rng.choice(idx)]
            b = a[:, ::-1] if rng.random() < 0.6 else x[rng.choice(idx)][:, ::-1]
            try:
                images.append(to_model_input(pair_photo(a, b, rng)))
            except EdgeError:
                continue
            labels.append(c)
            made += 1
    return np.stack(images), np.array(labels, dtype=np.int64)
