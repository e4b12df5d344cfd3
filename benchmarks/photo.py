"""The photo path (decode, cut-out, conversion, model) on real phone photos: today's runtime against the
pinned runtime (the gate), its split by stage and the camera loop's frame rate (information).

Both runtimes take the same photos to an answer with the same pinned model, photo by photo in turns, so
the ratio holds the decoder, numpy, Pillow and the CPU fixed and moves only with the runtime's code.
"""
from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import numpy as np

from . import reference, timing

PHOTO_MODEL = "model_int8.tflite"     # the release model users run on photos
CAMERA_SIZE = (640, 480)


def dev_photos() -> list[Path]:
    """The real phone photos (real-photos-dev: $FASHION_EDGE_PHOTOS or ../shared), or []."""
    from pipeline.evaluate import real_photos
    folder = real_photos.find_dev_set()
    return real_photos.read_dev_set(folder)[0] if folder else []


def one_thread_opencv() -> None:
    """OpenCV (video decode in the camera loop) on one thread too, when it is installed."""
    try:
        import cv2
    except ImportError:
        return
    cv2.setNumThreads(1)


def answer_photo(runtime, clf, path: Path):
    """One photo to its top-3, with the runtime's public functions, as `edge-classify PHOTO` does."""
    img = runtime.preprocess.load_image(path)
    x = runtime.preprocess.to_model_input(img)
    scores = clf.scores(x[None], photos=not runtime.preprocess.is_dataset_style(img))[0]
    return clf.top_k(scores, 3)


def photo_path_vs_reference(paths: list[Path], rounds: int = 3, pinned: Path = reference.REFERENCE_DIR) -> dict:
    """Seconds per photo, decode to answer, today's runtime ÷ the pinned runtime's (median photo of a round,
    median over rounds), both on the pinned int8 model."""
    import edge_runtime.classifier
    import edge_runtime.preprocess  # noqa: F401
    ref = reference.import_runtime(pinned)
    model = reference.path(PHOTO_MODEL, pinned)
    sides = {"today": (edge_runtime, edge_runtime.classifier.Classifier(str(model), num_threads=1)),
             "pinned": (ref, ref.classifier.Classifier(str(model), num_threads=1))}
    for runtime, clf in sides.values():
        for p in paths[:10]:
            answer_photo(runtime, clf, p)
    clock = time.perf_counter
    seconds = {s: np.empty((rounds, len(paths))) for s in sides}
    for r in range(rounds):
        for i, p in enumerate(paths):
            order = ("today", "pinned") if (i + r) % 2 == 0 else ("pinned", "today")
            for side in order:
                runtime, clf = sides[side]
                t0 = clock()
                answer_photo(runtime, clf, p)
                seconds[side][r, i] = clock() - t0
    return {"ratio": timing.ratio(seconds, "today", "pinned"), "photos": len(paths), "rounds": rounds,
            "model": PHOTO_MODEL, "today": timing.summary(seconds["today"]),
            "pinned": timing.summary(seconds["pinned"])}


def photo_stages(model: Path, paths: list[Path], rounds: int = 5, model_calls: int = 400) -> dict:
    """Every photo through decode → cut-out → conversion → model, timed per stage by today's runtime, and
    the median photo ÷ a batch-1 model call of the same round (information: it depends on the CPU)."""
    from edge_runtime.classifier import Classifier
    from edge_runtime.timing import STAGES, classify_timed, model_call_seconds

    clf = Classifier(str(model), num_threads=1)
    for p in paths[:10]:
        classify_timed(clf, p)
    model_call_seconds(clf, 100)
    timed, calls, per_round = [], [], []
    for _ in range(rounds):
        block = model_call_seconds(clf, model_calls)
        these = [classify_timed(clf, p) for p in paths]
        per_round.append(float(np.median([t.total for t in these]) / np.median(block)))
        timed += these
        calls.append(block)
    return {
        "model": Path(model).name, "photos": len(paths), "rounds": rounds,
        "total": timing.summary(np.array([t.total for t in timed])),
        "stages": {s: timing.summary(np.array([t.seconds[s] for t in timed])) for s in STAGES},
        "model_call_b1": timing.summary(np.concatenate(calls)),
        "photo_over_model_call": float(np.median(per_round)),
    }


def make_video(paths: list[Path], path: Path, frames: int, size: tuple[int, int] = CAMERA_SIZE) -> Path:
    """An MJPG .avi of `frames` frames at `size`: the photos in turn, each held for 3 frames (a camera
    pointed at one garment, then the next)."""
    import cv2
    from PIL import Image
    from edge_runtime.preprocess import load_image
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, size)
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write an MJPG video here")
    for i in range(frames):
        photo = load_image(paths[(i // 3) % len(paths)]).convert("RGB").resize(size, Image.Resampling.BILINEAR)
        writer.write(np.ascontiguousarray(np.asarray(photo)[..., ::-1]))
    writer.release()
    return path


def camera_fps(model: Path, paths: list[Path], frames: int = 300) -> dict:
    """Frames classified per second by the camera loop (`edge-classify --camera`) on a 640×480 video file
    made from the photos, one thread."""
    from edge_runtime.camera import run_camera
    from edge_runtime.classifier import Classifier

    clf = Classifier(str(model), num_threads=1)
    with tempfile.TemporaryDirectory(prefix="bench-camera-") as tmp:
        video = make_video(paths, Path(tmp) / "camera.avi", frames)
        err = io.StringIO()
        t0 = time.perf_counter()
        n = run_camera(clf, str(video), out=io.StringIO(), err=err)
        elapsed = time.perf_counter() - t0
    return {"frames": n, "seconds": elapsed, "fps": n / elapsed, "size": list(CAMERA_SIZE),
            "summary": err.getvalue().strip().splitlines()[-1]}
