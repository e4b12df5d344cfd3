"""edge_runtime.camera: a real video file through OpenCV, and the reconnect policy of the loop."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.camera import RECONNECT_TRIES, frame_to_model_input, run_camera
from edge_runtime.classifier import Classifier
from edge_runtime.cli import main
from edge_runtime.errors import EdgeError

try:
    from edge_models import REPO, fashion_mnist, garment_video
except ImportError:  # tests/ collected as a package
    from tests.edge_models import REPO, fashion_mnist, garment_video

cv2 = pytest.importorskip("cv2")
FRAMES = 24


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """An MJPG .avi of FRAMES dataset garments, each drawn dark on a light 160×120 BGR frame."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    assert writer.isOpened()
    for image in fashion_mnist("t10k", FRAMES)[0]:
        frame = np.full((120, 160, 3), 235, np.uint8)
        garment = cv2.resize(255 - image, (100, 100), interpolation=cv2.INTER_CUBIC)
        frame[10:110, 30:130] = np.minimum(frame[10:110, 30:130], garment[..., None])
        writer.write(frame)
    writer.release()
    return path


def test_every_frame_of_a_video_is_classified(models, video):
    script = Path(sys.executable).with_name("edge-classify")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "edge_runtime"]
    done = subprocess.run([*cmd, "--model", str(models / "model_int8.tflite"), "--camera", str(video),
                           "--max-frames", "1000"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == FRAMES
    assert lines[0].startswith("frame 1\t") and lines[-1].startswith(f"frame {FRAMES}\t")
    assert all("fps" in line and "median" in line and " ms" in line for line in lines)
    assert f"{FRAMES} frames" in done.stderr
    assert all(f"{stage} " in done.stderr for stage in ("decode", "cutout", "conversion", "model"))


def test_max_frames_stops_early(models, video, capsys):
    assert main(["--model", str(models / "model_int8.tflite"), "--camera", str(video), "--max-frames", "5"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5


def test_video_frames_classify_like_the_dataset_images(models, video):
    clf = Classifier(models / "model_int8.tflite")
    capture = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < FRAMES:
        ok, frame = capture.read()
        assert ok
        frames.append(frame_to_model_input(frame))
    capture.release()
    images = fashion_mnist("t10k", FRAMES)[0]
    agree = (clf.scores(np.stack(frames)).argmax(1) == clf.scores(images).argmax(1)).mean()
    assert agree >= 0.75  # BGR order handled, garment found, polarity right (JPEG frames, small model)


@pytest.mark.parametrize("source", ["missing.avi", "rtsp://127.0.0.1:9/none", "not-a-camera.txt"])
def test_unavailable_source_fails_before_any_frame(models, tmp_path, capsys, source):
    if source.endswith(".txt"):
        (tmp_path / source).write_text("not a video")
        source = str(tmp_path / source)
    assert main(["--model", str(models / "model_int8.tflite"), "--camera", source]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and source in err


class FlakyStream:
    """A live source (not OpenCV: this exercises the loop's policy) that yields `frames` then drops."""

    is_live = True

    def __init__(self, frames: int) -> None:
        self.name, self.left, self.closed = "flaky", frames, False

    def read(self):
        if self.left == 0:
            return None
        self.left -= 1
        return np.full((40, 30, 3), 200, np.uint8)

    def close(self) -> None:
        self.closed = True


def test_reconnect_reopens_a_dropped_stream(models):
    clf = Classifier(models / "model_int8.tflite")
    opened, waits = [], []

    def opener(source):
        opened.append(FlakyStream(3))
        return opened[-1]

    out = io.StringIO()
    count = run_camera(clf, "rtsp://cam", max_frames=7, reconnect=True, opener=opener, sleep=waits.append,
                       out=out, err=io.StringIO())
    assert count == 7 and len(out.getvalue().splitlines()) == 7
    assert len(opened) == 3 and waits == [0.5, 0.5] and all(s.closed for s in opened)


def test_without_reconnect_a_dropped_stream_ends_cleanly(models):
    clf = Classifier(models / "model_int8.tflite")
    count = run_camera(clf, "rtsp://cam", max_frames=100, opener=lambda s: FlakyStream(4), sleep=pytest.fail,
                       out=io.StringIO(), err=io.StringIO())
    assert count == 4


def test_reconnect_gives_up_after_bounded_backoff(models):
    clf = Classifier(models / "model_int8.tflite")
    waits, err = [], io.StringIO()
    calls = []

    def opener(source):
        calls.append(source)
        if len(calls) == 1:
            return FlakyStream(2)
        raise EdgeError(f"{source}: cannot open stream")

    count = run_camera(clf, "rtsp://cam", reconnect=True, opener=opener, sleep=waits.append,
                       out=io.StringIO(), err=err)
    assert count == 2
    assert waits == [0.5 * 2**i for i in range(RECONNECT_TRIES)]
    assert f"giving up after {RECONNECT_TRIES} tries" in err.getvalue()


# --- collecting training photos -------------------------------------------------------------------

def test_collect_saves_raw_frames_per_class_ready_for_training(models, video, tmp_path, capsys):
    from PIL import Image
    from pipeline.train import photo_variants

    code = main(["--model", str(models / "model_int8.tflite"), "--camera", str(video), "--max-frames", "5",
                 "--collect", str(tmp_path / "mine"), "--label", "t-shirt/TOP", "--every", "0"])
    assert code == 0
    saved = sorted((tmp_path / "mine" / "T-shirt_top").glob("*.jpg"))
    assert len(saved) == 5 and not list((tmp_path / "mine").rglob("*.tmp"))
    assert all(Image.open(p).size == (160, 120) for p in saved)      # the raw frame, not the 28×28 input
    out = capsys.readouterr()
    assert out.out.count("\tsaved ") == 5 and "saved 5 frames as 'T-shirt/top'" in out.err
    photos = photo_variants.read(tmp_path / "mine")                     # what --photos-train DIR reads
    assert len(photos.paths) == 5 and set(photos.labels.tolist()) == {0}


def test_collect_refuses_an_unknown_class_before_opening_the_camera(models, video, tmp_path, capsys):
    code = main(["--model", str(models / "model_int8.tflite"), "--camera", str(video),
                 "--collect", str(tmp_path / "mine"), "--label", "Hat"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "'Hat' is not a class of this model" in err[0] and "Ankle boot" in err[0]
    assert not (tmp_path / "mine").exists()


def test_collect_is_rate_limited():
    from edge_runtime.collect import Collector

    now = [0.0]
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        c = Collector(d, "Shirt", ["Shirt", "Coat"], every=2.0, clock=lambda: now[0])
        frame = np.zeros((48, 64, 3), np.uint8)
        saved = []
        for t in (0.0, 0.5, 1.9, 2.0, 3.0, 4.1):
            now[0] = t
            saved.append(c.offer(frame) is not None)
        assert saved == [True, False, False, True, False, True]


# --- a real stream that goes away and comes back (the service's case) --------------------------------

def test_served_camera_reconnects_to_a_real_stream_that_ends_and_comes_back(models, tmp_path, capfd):
    """The live view of a Pi that reads another device's MJPEG stream (our own /stream.mjpg, a real HTTP
    stream read by OpenCV/FFmpeg): the source server stops, the capture loop backs off and keeps trying,
    the source comes back on the same port, and frames flow again without a restart."""
    import threading
    import time

    from edge_runtime import serve

    clip = garment_video(tmp_path / "clip.avi")
    model = models / "model_int8.tflite"

    def source_server(port: int):
        srv = serve.start(model, ("127.0.0.1", port), camera=str(clip))
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return srv

    def wait(ok, timeout=30.0):
        t0 = time.monotonic()
        while not ok():
            assert time.monotonic() - t0 < timeout, "timed out"
            time.sleep(0.05)

    upstream = source_server(0)
    port = upstream.server_address[1]
    viewer = serve.start(model, ("127.0.0.1", 0), camera=f"http://127.0.0.1:{port}/stream.mjpg")
    threading.Thread(target=viewer.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        wait(lambda: viewer.capture.frames > 10)
        serve.stop(upstream)                                   # the camera goes away
        wait(lambda: "no frame; reopening in 2 s (try 2)" in capfd.readouterr().err)
        stalled = viewer.capture.frames
        time.sleep(0.5)
        assert viewer.capture.frames == stalled                 # nothing is classified while it is gone
        upstream = source_server(port)                          # and comes back on the same address
        wait(lambda: viewer.capture.frames > stalled + 10)
        assert viewer.capture.is_alive()
    finally:
        serve.stop(viewer)
        serve.stop(upstream)
    err = capfd.readouterr().err
    assert "frames again after" in err
