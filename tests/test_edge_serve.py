"""`edge-classify --serve`: every endpoint over real HTTP on loopback, bad input, a bounded load test that
checks the camera loop keeps its pace, a clean SIGTERM, and the page in a real headless Chromium."""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_runtime import serve

try:
    import browser
    from edge_models import REPO, fashion_mnist, garment_video
except ImportError:  # tests/ collected as a package
    from tests import browser
    from tests.edge_models import REPO, fashion_mnist, garment_video

cv2 = pytest.importorskip("cv2")
CLASSES = (1, 8)            # the video alternates trousers and bags, so the label changes
HOLD = 15                   # frames per garment: half a second at the served 30 fps


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """An MJPG .avi: dataset trousers and bags drawn dark on a light 320×240 frame, in turn."""
    return garment_video(tmp_path_factory.mktemp("serve-video") / "clip.avi", CLASSES, HOLD)


@pytest.fixture(scope="module")
def server(models, video):
    srv = serve.start(models / "model_int8.tflite", ("127.0.0.1", 0), camera=str(video))
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    _wait(lambda: srv.capture.frames > 3)
    yield srv
    serve.stop(srv)
    thread.join(timeout=5)
    assert srv.capture.src is None                     # the camera was released


def _wait(ok, timeout: float = 20.0) -> None:
    t0 = time.monotonic()
    while not ok():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _request(srv, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=20)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, r.getheader("Content-Type"), data


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def test_page_health_latest_input_events_and_stream(server):
    status, ctype, body = _request(server, "GET", "/")
    assert status == 200 and ctype.startswith("text/html") and b"edge-classify live" in body
    assert b"http://" not in body and b"https://" not in body              # self-contained: no CDN
    status, _, body = _request(server, "GET", "/healthz")
    assert status == 200 and json.loads(body)["ok"] is True
    status, ctype, body = _request(server, "GET", "/api/latest")
    latest = json.loads(body)
    assert status == 200 and ctype == "application/json"
    assert latest["label"] in ("Trouser", "Bag") and len(latest["top_k"]) == 3
    assert set(latest["timings_ms"]) == {"decode", "cutout", "conversion", "model"} and latest["fps"] > 0
    status, ctype, body = _request(server, "GET", "/input.png")
    assert status == 200 and ctype == "image/png" and Image.open(io.BytesIO(body)).size == (28, 28)

    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request("GET", "/api/events")
    r = conn.getresponse()
    assert r.getheader("Content-Type") == "text/event-stream"
    line = r.fp.readline()
    assert line.startswith(b"data: ") and json.loads(line[6:])["frame"] >= 1
    conn.close()
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request("GET", "/stream.mjpg")
    r = conn.getresponse()
    assert r.getheader("Content-Type").startswith("multipart/x-mixed-replace")
    assert r.fp.readline() == b"--frame\r\n" and r.fp.readline() == b"Content-Type: image/jpeg\r\n"
    length = int(r.fp.readline().split(b":")[1])
    r.fp.readline()
    assert r.fp.read(length)[:2] == b"\xff\xd8"                          # a JPEG
    conn.close()


def test_upload_gives_the_same_answer_as_the_command_line(server, models, tmp_path, capsys):
    from edge_runtime.cli import main
    images, _ = fashion_mnist("t10k", 3)
    photo = tmp_path / "shirt.png"
    Image.fromarray(images[2]).resize((140, 140)).convert("RGB").save(photo)
    status, _, body = _request(server, "POST", "/api/classify", photo.read_bytes())
    answer = json.loads(body)
    assert status == 200
    assert main(["--model", str(models / "model_int8.tflite"), "--json", str(photo)]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert answer["label"] == cli["label"] and answer["top_k"] == cli["top_k"]
    assert answer["path"] == "upload" and answer["timings_ms"]["decode"] > 0


@pytest.mark.parametrize("body, headers, status, words", [
    (b"this is not an image", {}, 400, "request body: not an image file"),
    (b"", {}, 400, "request body: empty"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, {}, 400, "request body"),
])
def test_bad_uploads_are_400_json_naming_the_problem(server, body, headers, status, words):
    got, ctype, data = _request(server, "POST", "/api/classify", body, headers)
    assert got == status and ctype == "application/json" and words in json.loads(data)["error"]


def test_oversized_upload_is_413_before_its_body_is_sent(server):
    with socket.create_connection(server.server_address[:2], timeout=10) as s:
        s.sendall(b"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999999999\r\n\r\n")
        reply = b""                          # answered without a byte of the body; the headers and the
        while chunk := s.recv(4096):         # JSON may come in separate segments, so read to the close
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413") and b"over the 16 MB limit" in reply


def test_unknown_paths_are_404_json(server):
    assert _request(server, "GET", "/nope")[0] == 404
    status, _, body = _request(server, "POST", "/api/nope", b"x")
    assert status == 404 and "error" in json.loads(body)


def test_many_clients_get_correct_json_and_do_not_stall_the_camera(server):
    """20 clients × 50 requests (every fifth an upload) on loopback, against the capture loop's pace."""
    def fps_over(seconds: float) -> float:
        f0, t0 = server.capture.frames, time.monotonic()
        time.sleep(seconds)
        return (server.capture.frames - f0) / (time.monotonic() - t0)

    alone = fps_over(2.0)
    photo = _png(fashion_mnist("t10k", 1)[0][0])
    errors, answers = [], []

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
        for i in range(50):
            try:
                if (i + k) % 5 == 0:
                    conn.request("POST", "/api/classify", body=photo)
                else:
                    conn.request("GET", "/api/latest")
                r = conn.getresponse()
                data = json.loads(r.read())
                (answers if r.status == 200 and data["label"] else errors).append(data)
            except Exception as e:                        # any failure is a test failure, with its reason
                errors.append(repr(e))
                conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
        conn.close()

    measured = {}
    clients = [threading.Thread(target=client, args=(k,)) for k in range(20)]
    f0, t0 = server.capture.frames, time.monotonic()
    for c in clients:
        c.start()
    for c in clients:
        c.join(timeout=120)
    measured["with"] = (server.capture.frames - f0) / (time.monotonic() - t0)
    print(f"\n  [serve] camera loop {alone:.1f} fps alone, {measured['with']:.1f} fps with 20 clients × 50 requests "
          f"({len(answers)} answers, {len(errors)} errors, {time.monotonic() - t0:.1f} s)")
    assert not errors and len(answers) == 1000
    assert measured["with"] >= 0.7 * alone


def _serve_process(*args: str) -> tuple[subprocess.Popen, int]:
    """`edge-classify ... --serve 127.0.0.1:0` in a process of its own, and the port it listens on."""
    script = Path(sys.executable).with_name("edge-classify")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "edge_runtime"]
    p = subprocess.Popen([*cmd, *args, "--serve", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=REPO)
    first = p.stdout.readline()
    if "open http://127.0.0.1:" not in first:
        p.kill()
        raise AssertionError(first + p.stderr.read())
    return p, int(first.rsplit(":", 1)[1].split("/")[0])


def test_sigterm_stops_the_server_and_releases_the_camera(models, video):
    p, port = _serve_process("--model", str(models / "model_int8.tflite"), "--camera", str(video))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
        assert "camera released" in p.stdout.read()
    finally:
        if p.poll() is None:
            p.kill()


def test_serve_needs_a_usable_address(models, capsys):
    from edge_runtime.cli import main
    assert main(["--model", str(models / "model_int8.tflite"), "--serve", "127.0.0.1:http"]) == 2
    assert "expected [HOST:]PORT" in capsys.readouterr().err


@pytest.mark.slow
def test_page_in_a_real_browser_shows_a_changing_label_and_classifies_an_upload(server, tmp_path):
    """Headless Chromium (Debian's) opens the page, waits for the label to appear and change, uploads a
    photo through the page, and saves a screenshot ($FASHION_EDGE_SCREENSHOT: also there)."""
    photo = tmp_path / "trouser.png"
    images, labels = fashion_mnist("t10k", 50)
    Image.fromarray(images[np.flatnonzero(labels == 1)[0]]).resize((160, 160)).convert("RGB").save(photo)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    t0 = time.monotonic()
    with browser.sync_playwright() as p:
        chromium = browser.launch(p)
        page = chromium.new_page(viewport={"width": 1100, "height": 640})
        page.goto(url)
        page.wait_for_function("document.getElementById('label').textContent !== '–'", timeout=20000)
        first = page.inner_text("#label")
        page.wait_for_function(f"document.getElementById('label').textContent !== {json.dumps(first)}", timeout=20000)
        assert {first, page.inner_text("#label")} <= {"Trouser", "Bag"}
        page.set_input_files("#file", str(photo))
        page.wait_for_function("document.getElementById('upload-label').textContent.includes(': ')", timeout=20000)
        assert page.inner_text("#upload-label") == "trouser.png: Trouser"
        page.wait_for_function("document.getElementById('input').naturalWidth === 28", timeout=10000)
        shot = tmp_path / "serve.png"
        page.screenshot(path=str(shot))
        chromium.close()
    print(f"\n  [serve] browser test {time.monotonic() - t0:.1f} s, screenshot {shot}")
    assert Image.open(shot).size == (1100, 640)
    if os.environ.get("FASHION_EDGE_SCREENSHOT"):
        shutil.copy(shot, os.environ["FASHION_EDGE_SCREENSHOT"])


# --- photos as they come off a phone ---------------------------------------------------------------------


def test_phone_photo_uploads_of_108_and_200_mpx_are_classified_in_little_memory(models, phone_photos):
    """POST /api/classify of the same scene at 12, 108 and 200 Mpx, each to a fresh server: the same answer, and
    the server's peak RSS (VmHWM, read from its /proc status) under 2× the one after a 12 Mpx upload."""
    answers, peaks = {}, {}
    for size in ("4000x3000", "12000x9000", "16320x12240"):
        body = (phone_photos / f"photo-{size}.jpg").read_bytes()
        assert len(body) < serve.MAX_BODY_BYTES                  # else this would test the 413
        p, port = _serve_process("--model", str(models / "model_int8.tflite"))
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("POST", "/api/classify", body=body)
            r = conn.getresponse()
            answer = json.loads(r.read())
            conn.close()
            assert r.status == 200, answer
            answers[size] = answer["label"]
            status = Path(f"/proc/{p.pid}/status").read_text().splitlines()
            peaks[size] = int([line.split()[1] for line in status if line.startswith("VmHWM:")][0])
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=10)
    print(f"\n  [serve] peak RSS after one upload (MB): " + ", ".join(f"{s} {kb / 1024:.0f}" for s, kb in peaks.items())
          + f"; answers {answers}")
    assert answers["4000x3000"] == "Trouser"
    assert answers["12000x9000"] == answers["16320x12240"] == answers["4000x3000"]
    assert peaks["12000x9000"] < 2 * peaks["4000x3000"] and peaks["16320x12240"] < 2 * peaks["4000x3000"]


@pytest.mark.parametrize("name, words", [
    ("plain-12000x9000.png", "request body: refused, image declares 108 Mpx, over the 64 Mpx limit"),
    ("bomb-65500x65500.jpg", "request body: refused, JPEG declares 65500×65500"),
    ("progressive-12000x9000.jpg", "request body: refused, progressive JPEG declares 12000×9000"),
])
def test_uploads_too_big_to_decode_small_are_400_naming_the_problem(server, phone_photos, name, words):
    status, ctype, data = _request(server, "POST", "/api/classify", (phone_photos / name).read_bytes())
    assert status == 400 and ctype == "application/json" and json.loads(data)["error"].startswith(words)


def test_heic_upload_gives_the_same_answer_as_the_jpeg_it_was_made_from(server, heic_files):
    labels = {}
    for name in ("photo.jpg", "thumbnail.heic", "plain.heic"):
        status, _, body = _request(server, "POST", "/api/classify", (heic_files / name).read_bytes())
        assert status == 200, body
        labels[name] = json.loads(body)["label"]
    assert labels["thumbnail.heic"] == labels["plain.heic"] == labels["photo.jpg"] == "Trouser"
