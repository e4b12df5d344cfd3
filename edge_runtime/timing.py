"""Where the time of one picture goes: decode, cut-out, the rest of the conversion, the model.

The model answers a 28×28 image in well under a millisecond; a photo costs what happens before it.
`make bench`, `edge-classify --bench PHOTO` and the camera loop all split their time with these.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from .classifier import Classifier, Prediction
from .decode import load_image
from .preprocess import is_dataset_style, to_model_input

# The stages of the photo path, in order. "decode" is reading and decoding the file (or, for a camera,
# reading the frame); "conversion" is what to_model_input spends besides the cut-out; "model" is
# Classifier.scores (the photo and its mirror image) and the ranking.
STAGES = ("decode", "cutout", "conversion", "model")


@dataclass(frozen=True)
class Timed:
    """Predictions for one picture and the seconds each stage took."""

    predictions: list[Prediction]
    seconds: dict[str, float]
    model_input: np.ndarray | None = None     # the (28, 28) uint8 image the model was given

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def classify_timed(classifier: Classifier, picture, top_k: int = 3, decode_s: float = 0.0) -> Timed:
    """Classify a path (decoded here and timed) or an already decoded picture (give `decode_s` if its
    reading was timed elsewhere, as a camera loop does), as `edge-classify` would."""
    if isinstance(picture, (str, os.PathLike)):
        t0 = time.perf_counter()
        picture = load_image(picture)
        decode_s = time.perf_counter() - t0
    spent: dict = {}
    x = to_model_input(picture, spent)
    t0 = time.perf_counter()
    scores = classifier.scores(x[None], photos=not is_dataset_style(picture))[0]
    predictions = classifier.top_k(scores, top_k)
    model_s = time.perf_counter() - t0
    cutout = spent.get("cutout", 0.0)
    return Timed(predictions, {"decode": decode_s, "cutout": cutout,
                               "conversion": spent["conversion"] - cutout, "model": model_s}, x)


def model_call_seconds(classifier: Classifier, calls: int, image: np.ndarray | None = None) -> np.ndarray:
    """Seconds of each of `calls` batch-1 `Classifier.scores` calls on one 28×28 image: what the
    model itself costs, the yardstick the photo path is measured against."""
    batch = (np.zeros((28, 28), np.uint8) if image is None else image)[None]
    out = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        classifier.scores(batch)
        out[i] = time.perf_counter() - t0
    return out


def stage_medians_ms(timed: list[Timed]) -> dict[str, float]:
    """Median milliseconds per stage, and of the whole path, over several pictures or runs."""
    out = {s: float(np.median([t.seconds[s] for t in timed])) * 1e3 for s in STAGES}
    out["total"] = float(np.median([t.total for t in timed])) * 1e3
    return out
