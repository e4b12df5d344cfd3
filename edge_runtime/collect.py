"""Collect camera frames as training photos: `edge-classify --camera SOURCE --collect DIR --label CLASS`.

Raw frames (not the 28×28 model input) are saved as DIR/<class>/<UTC timestamp>.jpg, at most one every
`every` seconds, ready for `python -m pipeline export --photos-train DIR`.
"""

from __future__ import annotations

import datetime
import re
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from .errors import EdgeError

JPEG_QUALITY = 95


def folder_name(label: str) -> str:
    """A class name as a folder name: 'T-shirt/top' → 'T-shirt_top' (the pipeline maps it back)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_")


def resolve_label(label: str, labels: Sequence[str]) -> str:
    """The model's own spelling of `label` (any case, or as a folder name); EdgeError if it is no class."""
    def norm(s: str) -> str:
        return re.sub(r"[^a-z0-9]", "", s.lower())
    for known in labels:
        if norm(known) == norm(label):
            return known
    raise EdgeError(f"--label {label!r} is not a class of this model; choose one of: {', '.join(labels)}")


class Collector:
    """Saves a frame into DIR/<class>/ when at least `every` seconds have passed since the last one."""

    def __init__(self, folder: str | Path, label: str, labels: Sequence[str], every: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = resolve_label(label, labels)
        self.folder = Path(folder) / folder_name(self.label)
        if not every >= 0:
            raise EdgeError(f"--every must be 0 or more seconds, got {every}")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EdgeError(f"{self.folder}: cannot create the folder for collected frames ({e.strerror or e})") from e
        self.every, self.clock = every, clock
        self.saved: list[Path] = []
        self._last: float | None = None

    def offer(self, frame_bgr: np.ndarray) -> Path | None:
        """Save `frame_bgr` if it is time to; return the file written, or None."""
        now = self.clock()
        if self._last is not None and now - self._last < self.every:
            return None
        self._last = now
        rgb = frame_bgr if frame_bgr.ndim == 2 else np.ascontiguousarray(frame_bgr[..., 2::-1])
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S_%fZ")
        path = self.folder / f"{stamp}.jpg"
        tmp = path.with_name(path.name + ".tmp")
        try:
            Image.fromarray(rgb).save(tmp, "JPEG", quality=JPEG_QUALITY)
            tmp.replace(path)                       # never a half-written photo in the training folder
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise EdgeError(f"{path}: cannot save the frame ({e.strerror or e})") from e
        self.saved.append(path)
        return path
