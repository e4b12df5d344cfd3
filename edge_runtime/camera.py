"""Frame sources (OpenCV VideoCapture, picamera2) and the capture loop that classifies each frame."""

from __future__ import annotations

import statistics
import sys
import time
from collections import deque
from pathlib import Path
from typing import Callable, Protocol, TextIO

import numpy as np
from PIL import Image

from .classifier import Classifier, format_predictions
from .collect import Collector
from .errors import EdgeError
from .preprocess import to_model_input
from .timing import STAGES, Timed, classify_timed, stage_medians_ms

STREAM_TIMEOUT_MS = 10_000  # a stream URL that neither opens nor sends a frame this long counts as dropped
RECONNECT_TRIES = 5
RECONNECT_FIRST_WAIT_S = 0.5  # doubles after each failed try
LATENCY_WINDOW = 100  # frames behind the running median


class FrameSource(Protocol):
    """Yields BGR uint8 frames (H, W, 3), as OpenCV and picamera2's "RGB888" format lay them out."""

    name: str
    is_live: bool  # a camera or a stream (may reconnect), not a file (whose end is the end)

    def read(self) -> np.ndarray | None:
        """The next frame, or None when the source has ended or dropped."""
        ...

    def close(self) -> None: ...


class OpenCVSource:
    """A camera index ("0"), a video file or a stream URL through cv2.VideoCapture."""

    def __init__(self, source: str) -> None:
        try:
            import cv2
        except ModuleNotFoundError as e:
            raise EdgeError(f"{source}: OpenCV is not installed: pip install 'fashion-edge[camera]'") from e
        self.name = source
        self.is_live = source.isdigit() or "://" in source
        if not self.is_live and not Path(source).is_file():
            raise EdgeError(f"{source}: no such video file (use a digit for a camera index, or a URL)")
        if "://" in source:    # without a timeout a stalled stream blocks read() for good: no reconnect
            self._capture = cv2.VideoCapture(source, cv2.CAP_ANY, [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS])
        else:
            self._capture = cv2.VideoCapture(int(source) if source.isdigit() else source)
        if not self._capture.isOpened():
            self._capture.release()
            kind = "camera" if source.isdigit() else "stream" if self.is_live else "video file"
            raise EdgeError(f"{source}: cannot open {kind}")

    def read(self) -> np.ndarray | None:
        ok, frame = self._capture.read()
        return frame if ok and frame is not None and frame.size else None

    def close(self) -> None:
        self._capture.release()


class PiCameraSource:
    """The Raspberry Pi camera through picamera2 (installed with apt: python3-picamera2)."""

    def __init__(self, size: tuple[int, int] = (640, 480)) -> None:
        try:
            from picamera2 import Picamera2
        except ModuleNotFoundError as e:
            raise EdgeError("picamera: picamera2 is not installed (sudo apt install python3-picamera2)") from e
        self.name, self.is_live = "picamera", True
        try:
            self._camera = Picamera2()
            # "RGB888" arrays are laid out B, G, R per pixel: the same as OpenCV frames.
            self._camera.configure(self._camera.create_preview_configuration(main={"format": "RGB888", "size": size}))
            self._camera.start()
        except (RuntimeError, IndexError, OSError) as e:
            raise EdgeError(f"picamera: cannot start the camera ({e})") from e

    def read(self) -> np.ndarray | None:
        try:
            return self._camera.capture_array()
        except (RuntimeError, OSError):
            return None

    def close(self) -> None:
        self._camera.close()


def open_source(source: str) -> FrameSource:
    """"picamera" → picamera2; digits → camera index; anything else → video file or stream URL."""
    if source == "picamera":
        return PiCameraSource()
    return OpenCVSource(source)


def frame_to_picture(frame_bgr: np.ndarray) -> Image.Image | np.ndarray:
    """A BGR camera frame → what `to_model_input` takes (an RGB image; a gray frame stays an array)."""
    if frame_bgr.ndim == 2:
        return frame_bgr
    return Image.fromarray(np.ascontiguousarray(frame_bgr[..., 2::-1]))  # BGR(A) → RGB, alpha dropped


def frame_to_model_input(frame_bgr: np.ndarray) -> np.ndarray:
    """A BGR camera frame → the (28, 28) uint8 model input."""
    return to_model_input(frame_to_picture(frame_bgr))


def run_camera(
    classifier: Classifier,
    source: str,
    *,
    max_frames: int | None = None,
    top_k: int = 1,
    threshold: float | None = None,
    reconnect: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
    opener: Callable[[str], FrameSource] = open_source,
    sleep: Callable[[float], None] = time.sleep,
    collector: Collector | None = None,
) -> int:
    """Classify frames until the source ends or `max_frames`; return the number of frames classified.

    Prints one line per frame (rewritten in place on a terminal) with the answer, FPS and the median
    latency of the last frames. If a live source drops and `reconnect` is set, it is reopened up to
    RECONNECT_TRIES times with a doubling wait; otherwise the loop ends cleanly. A source that cannot be
    opened at the start raises EdgeError before any frame. With a `collector`, raw frames are also saved
    as training photos (edge_runtime.collect), and the line of a frame that was saved names the file.
    """
    # Looked up per call (not as defaults), so a redirected sys.stdout/sys.stderr is honoured.
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    src: FrameSource | None = opener(source)
    frames = 0
    latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)     # conversion + model, per frame
    stages: deque[Timed] = deque(maxlen=LATENCY_WINDOW)
    started = time.perf_counter()
    live_line = out.isatty()
    try:
        while max_frames is None or frames < max_frames:
            t_read = time.perf_counter()
            frame = src.read()
            if frame is None:
                live = src.is_live
                src.close()
                src = None
                if not (reconnect and live):
                    break
                src = _reopen(source, opener, sleep, err)
                if src is None:
                    break
                continue
            picture = frame_to_picture(frame)
            timed = classify_timed(classifier, picture, top_k, decode_s=time.perf_counter() - t_read)
            predictions = timed.predictions
            latencies.append(timed.total - timed.seconds["decode"])
            stages.append(timed)
            frames += 1
            fps = frames / max(time.perf_counter() - started, 1e-9)
            line = (
                f"frame {frames}\t{format_predictions(predictions, threshold)}\t"
                f"{fps:.1f} fps\tmedian {statistics.median(latencies) * 1e3:.2f} ms"
            )
            saved = collector.offer(frame) if collector is not None else None
            if saved is not None:
                line += f"\tsaved {saved}"
            if live_line:
                out.write("\r\x1b[K" + line)
            else:
                out.write(line + "\n")
            out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        if src is not None:
            src.close()
        if live_line:
            out.write("\n")
    elapsed = time.perf_counter() - started
    if collector is not None:
        print(f"{source}: saved {len(collector.saved)} frames as {collector.label!r} into {collector.folder}", file=err)
    if frames:
        ms = stage_medians_ms(list(stages))
        print(
            f"{source}: {frames} frames in {elapsed:.1f} s ({frames / elapsed:.1f} fps), "
            f"median latency {statistics.median(latencies) * 1e3:.2f} ms; median ms per stage over the last "
            f"{len(stages)} frames: " + ", ".join(f"{s} {ms[s]:.2f}" for s in STAGES),
            file=err,
        )
    return frames


def _reopen(
    source: str, opener: Callable[[str], FrameSource], sleep: Callable[[float], None], err: TextIO
) -> FrameSource | None:
    wait = RECONNECT_FIRST_WAIT_S
    for attempt in range(1, RECONNECT_TRIES + 1):
        print(f"{source}: stream dropped, reconnecting in {wait:g} s (try {attempt}/{RECONNECT_TRIES})", file=err)
        sleep(wait)
        wait *= 2
        try:
            return opener(source)
        except EdgeError as e:
            print(str(e), file=err)
    print(f"{source}: giving up after {RECONNECT_TRIES} tries", file=err)
    return None
