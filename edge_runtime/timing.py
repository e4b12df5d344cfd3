"""Where the time of one picture goes: decode, cut-out, the rest of the conversion, the model; and the one
way a batch-1 model call is timed (`call_seconds`, `round_robin_seconds`).

The model answers a 28×28 image in well under a millisecond; a photo costs what happens before it.
`make bench`, `edge-classify --bench PHOTO` and the camera loop all split their time with these; the
pipeline's latency figures (compare, device_cost, the tune search) time their calls with these too.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

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
    return call_seconds(lambda: classifier.scores(batch), calls)


def call_seconds(call: Callable[[], object], calls: int, warmup: int = 0) -> np.ndarray:
    """Seconds of each of `calls` calls of `call()`, timed one by one after `warmup` untimed calls."""
    for _ in range(warmup):
        call()
    out = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        call()
        out[i] = time.perf_counter() - t0
    return out


def round_robin_seconds(calls: dict[str, Callable[[], object]], rounds: int, per_round: int, warmup: int = 0,
                        warmup_each_round: int = 0, rotate: bool = True) -> dict[str, np.ndarray]:
    """Several models' calls timed in turn in the same run, so a busy machine slows them alike: after `warmup`
    untimed calls of each, `rounds` rounds of `per_round` timed calls of each (`warmup_each_round` untimed
    ones before every block), the order rotated by one every round when `rotate`. {name: (rounds, per_round)}."""
    names = list(calls)
    for name in names:
        call_seconds(calls[name], 0, warmup)
    out = {n: np.empty((rounds, per_round)) for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)] if rotate else names
        for name in order:
            out[name][r] = call_seconds(calls[name], per_round, warmup_each_round)
    return out


def stage_medians_ms(timed: list[Timed]) -> dict[str, float]:
    """Median milliseconds per stage, and of the whole path, over several pictures or runs."""
    out = {s: float(np.median([t.seconds[s] for t in timed])) * 1e3 for s in STAGES}
    out["total"] = float(np.median([t.total for t in timed])) * 1e3
    return out
