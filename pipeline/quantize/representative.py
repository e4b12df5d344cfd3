"""The int8 representative data ("calibration" in TFLite's and onnxruntime's sense, and only that): the
images whose activations set every int8 scale. The one model-specific piece of quantization."""
from __future__ import annotations

import numpy as np

from pipeline.config import Config
from pipeline.train.fit import standardize


def calibration_images(cfg: Config, splits) -> np.ndarray:
    """A seeded, class-balanced sample of TRAINING images, standardized (never validation or test images)."""
    rng = np.random.default_rng(cfg.seed + cfg.seeds.representative)
    n = min(cfg.quant.calibration_size, len(splits.y_train))
    per_class = [rng.permutation(np.flatnonzero(splits.y_train == c)) for c in range(10)]
    idx = np.concatenate([p[: max(1, n // 10)] for p in per_class])[:n]
    return standardize(splits.x_train[idx], cfg.data.mean, cfg.data.std)
