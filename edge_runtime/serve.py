"""`edge-classify --serve [HOST:]PORT`: a live page for a headless device, and a small JSON API.

GET /                the page (self-contained: no CDN, no build step)
GET /stream.mjpg     the camera frames as MJPEG
GET /input.png       the 28×28 image the model was given for the latest frame
GET /api/latest      the latest result: one `edge-classify --json` object plus timings, fps, frame number
GET /api/events      the same as Server-Sent Events, one per classified frame
POST /api/classify   body = an image file → that JSON for it (never written to disk)
GET /healthz         {"ok": true, ...} (without a token on a network address: only {"ok": true})

Every request must name this server in its Host header (edge_runtime.serve_host: a defence against DNS
rebinding) or gets 403 JSON, before anything else is looked at; /healthz still answers, with only {"ok": true}.
Bound to any address but loopback, every other path needs the token (edge_runtime.serve_auth) and
answers 401 JSON without it.

Standard library only (http.server). One thread per connection, at most MAX_CONNECTIONS at once
(more get 503 at once); uploads are classified by a pool of UPLOAD_WORKERS classifiers, and a request
that waits longer than UPLOAD_WAIT_S for one gets 503, so clients can neither stall each other for
long nor starve the capture loop, which has its own classifier and thread.
"""

from __future__ import annotations

import io
import json
import queue
import signal
import socket
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Sequence, TextIO

import numpy as np
from PIL import Image

from .camera import FrameSource, frame_to_picture, open_source
from .classifier import Classifier, json_answer
from .decode import decode_image
from .errors import EdgeError
from .serve_auth import OPEN_PATHS, REFUSAL, Access, Decision, Gate, notice, url_query
from .serve_host import REFUSAL as HOST_REFUSAL
from .serve_host import HostRule
from .timing import classify_timed

MAX_BODY_BYTES = 16 * 1024 * 1024     # larger uploads get 413 before their body is read
MAX_CONNECTIONS = 32                  # concurrent connections; more get 503
UPLOAD_WORKERS = 2                    # classifiers for uploads (a Classifier is not thread-safe)
UPLOAD_WAIT_S = 5.0                   # how long an upload may wait for a free classifier
STREAM_WIDTH = 480                    # frames are sent at most this wide (JPEG encoding costs CPU)
FPS_WINDOW = 30                       # frames behind the shown frames-per-second
VIDEO_FILE_FPS = 30.0                 # a video file is played at most this fast, like a camera (not flat out)
REOPEN_MAX_WAIT_S = 10.0              # longest wait between two tries to reopen a lost camera or stream
PAGE = Path(__file__).with_name("serve_page.html")


def parse_address(text: str) -> tuple[str, int]:
    """'8080' → ('127.0.0.1', 8080); '0.0.0.0:8080' → ('0.0.0.0', 8080). EdgeError if unusable."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise EdgeError(f"--serve {text!r}: expected [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080")
    return host, int(port)


class Live:
    """The latest camera result, shared by the capture thread (writer) and the handlers (readers)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.version = 0
        self.result: dict | None = None
        self.frame_jpeg: bytes | None = None
        self.input_png: bytes | None = None

    def publish(self, result: dict, frame_jpeg: bytes, input_png: bytes) -> None:
        with self.cond:
            self.version += 1
            self.result, self.frame_jpeg, self.input_png = result, frame_jpeg, input_png
            self.cond.notify_all()

    def wait_newer(self, version: int, timeout: float) -> tuple[int, dict | None, bytes | None]:
        """Block until a result newer than `version` (or `timeout`); return the latest one."""
        with self.cond:
            self.cond.wait_for(lambda: self.version > version, timeout)
            return self.version, self.result, self.frame_jpeg


def _jpeg(picture, width: int = STREAM_WIDTH) -> bytes:
    img = picture if isinstance(picture, Image.Image) else Image.fromarray(np.asarray(picture))
    if img.width > width:
        img = img.resize((width, max(1, round(img.height * width / img.width))), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=75)
    return buf.getvalue()


def _png(image_uint8: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image_uint8).save(buf, "PNG")
    return buf.getvalue()


def _ms(seconds: dict[str, float]) -> dict[str, float]:
    return {k: round(v * 1e3, 3) for k, v in seconds.items()}


class CaptureLoop(threading.Thread):
    """Reads frames, classifies each with its own classifier, and publishes the result. A video file
    starts again at its end (a demo loops); a camera or stream that drops is reopened for as long as the
    server runs (a service outlives an unplugged camera), waiting 1 s, 2 s, 4 s … up to REOPEN_MAX_WAIT_S
    between tries, so a long outage costs a log line every few seconds, not every second."""

    def __init__(self, classifier: Classifier, source: str, live: Live, top_k: int, threshold: float | None,
                 opener: Callable[[str], FrameSource] = open_source, err: TextIO | None = None) -> None:
        super().__init__(name="capture", daemon=True)
        self.classifier, self.source, self.live = classifier, source, live
        self.top_k, self.threshold, self.opener = top_k, threshold, opener
        self.err = err or sys.stderr
        self.stop = threading.Event()
        self.frames = 0
        self.src: FrameSource | None = opener(source)     # fails here, before the server starts
        self._times: deque[float] = deque(maxlen=FPS_WINDOW)
        self._tries = 0                                   # reopen tries since the last frame
        self._lost_at = 0.0

    def fps(self) -> float:
        t = self._times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    def run(self) -> None:
        next_frame = time.perf_counter()
        try:
            while not self.stop.is_set():
                if self.src is not None and not self.src.is_live:
                    self.stop.wait(max(0.0, next_frame - time.perf_counter()))
                    next_frame = max(next_frame + 1.0 / VIDEO_FILE_FPS, time.perf_counter())
                t_read = time.perf_counter()
                frame = self.src.read() if self.src is not None else None
                if frame is None:
                    self._reopen()
                    continue
                if self._tries:
                    print(f"{self.source}: frames again after {time.monotonic() - self._lost_at:.0f} s "
                          f"({self._tries} tries)", file=self.err, flush=True)
                    self._tries = 0
                picture = frame_to_picture(frame)
                timed = classify_timed(self.classifier, picture, self.top_k, decode_s=time.perf_counter() - t_read)
                self.frames += 1
                self._times.append(time.perf_counter())
                result = {**json_answer(self.source, timed.predictions, self.threshold),
                          "timings_ms": _ms(timed.seconds), "total_ms": round(timed.total * 1e3, 3),
                          "frame": self.frames, "fps": round(self.fps(), 2)}
                self.live.publish(result, _jpeg(picture), _png(timed.model_input))
        finally:
            if self.src is not None:
                self.src.close()
                self.src = None

    def _reopen(self) -> None:
        live = self.src.is_live if self.src is not None else True
        if self.src is not None:
            self.src.close()
            self.src = None
        if live:
            if self._tries == 0:
                self._lost_at = time.monotonic()
            self._tries += 1
            wait = min(2.0 ** (self._tries - 1), REOPEN_MAX_WAIT_S)
            print(f"{self.source}: no frame; reopening in {wait:g} s (try {self._tries})", file=self.err, flush=True)
            self.stop.wait(wait)
        try:
            self.src = self.opener(self.source)
        except EdgeError as e:          # the next pass waits longer
            print(str(e), file=self.err, flush=True)


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on concurrent connections and a pool of upload classifiers."""

    daemon_threads = True
    request_queue_size = 64               # the listen backlog: 20 clients connecting at once must not be reset

    def __init__(self, address, model_path: Path, top_k: int, threshold: float | None, live: Live | None,
                 capture: CaptureLoop | None, threads: int = 1, verify: bool = True,
                 token: str | None = None, allow_hosts: Sequence[str] = ()) -> None:
        self.top_k, self.threshold, self.live, self.capture = top_k, threshold, live, capture
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.classifiers: queue.Queue[Classifier] = queue.Queue()
        for _ in range(UPLOAD_WORKERS):
            self.classifiers.put(Classifier(model_path, num_threads=threads, verify=verify))
        self.page = PAGE.read_bytes()
        self.closing = threading.Event()
        super().__init__(address, Handler)
        self.gate = Gate(token, self.server_address[1])
        self.hosts = HostRule(address[0], allow_hosts)

    def handle_error(self, request, client_address):
        # A client that went away mid-answer (a closed tab, a test done reading) is not a server error.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Connection: close\r\nContent-Length: 36\r\n\r\n"
                                b'{"error": "too many connections"}\n\n\n')
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"
    server_version = "edge-classify"

    def log_message(self, format, *args):    # noqa: A002 (the base class's name): quiet by default
        pass

    # --- the Host (edge_runtime.serve_host), then the token (serve_auth), before any route sees the request
    def parse_request(self) -> bool:
        self.auth: Decision | None = None       # a kept-alive connection's previous request decided nothing here
        if not super().parse_request():
            return False
        if not self.server.hosts.allows(self.headers.get_all("Host")):
            if self.path.split("?", 1)[0] in OPEN_PATHS:    # up or not, and nothing more, whoever asks
                self.auth = Decision(True, False, None)
                return True
            self._json(403, {"error": HOST_REFUSAL, "status": 403}, {"Connection": "close"})
            self.close_connection = True
            return False
        self.auth = self.server.gate.decide(self.path, self.headers)
        if not self.auth.allowed:        # the body of a POST is never read: the connection closes
            self._json(401, {"error": REFUSAL, "status": 401},
                       {"WWW-Authenticate": 'Bearer realm="edge-classify"', "Connection": "close"})
            self.close_connection = True
        return self.auth.allowed

    def end_headers(self) -> None:
        if getattr(self, "auth", None) is not None and self.auth.set_cookie:
            self.send_header("Set-Cookie", self.auth.set_cookie)
        self.send_header("Referrer-Policy", "no-referrer")     # a token in the URL goes nowhere else
        super().end_headers()

    # --- helpers ---------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: dict, extra: dict | None = None) -> None:
        self._send(status, (json.dumps(obj, ensure_ascii=False) + "\n").encode(), "application/json", extra)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message, "status": status}, {"Connection": "close"})
        self.close_connection = True

    # --- routes ----------------------------------------------------------------------------------------
    def do_GET(self):  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        live = self.server.live
        if path == "/":
            return self._send(200, self.server.page, "text/html; charset=utf-8")
        if path == "/healthz":
            cap = self.server.capture
            if not self.auth.authorized:     # a camera URL may hold a password: say only that it is up
                return self._json(200, {"ok": True})
            return self._json(200, {"ok": True, "camera": cap.source if cap else None,
                                    "frames": cap.frames if cap else 0, "threshold": self.server.threshold})
        if path == "/api/latest":
            if live is None or live.result is None:
                return self._json(404 if live is None else 503,
                                  {"error": "no camera (--camera SOURCE)" if live is None else "no frame yet"})
            return self._json(200, live.result)
        if path == "/input.png":
            if live is None or live.input_png is None:
                return self._error(404, "no frame yet")
            return self._send(200, live.input_png, "image/png")
        if path == "/api/events":
            return self._events()
        if path == "/stream.mjpg":
            return self._mjpeg()
        return self._error(404, f"no such page: {path}")

    def do_POST(self):  # noqa: N802
        if self.path.split("?", 1)[0] != "/api/classify":
            return self._error(404, f"no such endpoint: POST {self.path}")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self._error(411, "send the image as the request body, with a Content-Length")
        n = int(length)
        if n > MAX_BODY_BYTES:            # refused before reading it
            return self._error(413, f"image of {n} bytes is over the {MAX_BODY_BYTES // (1024 * 1024)} MB limit")
        body = self.rfile.read(n)
        t0 = time.perf_counter()
        try:
            picture = decode_image(body, "request body")
        except EdgeError as e:
            return self._error(400, str(e))
        decode_s = time.perf_counter() - t0
        try:
            classifier = self.server.classifiers.get(timeout=UPLOAD_WAIT_S)
        except queue.Empty:
            return self._error(503, "busy: every classifier is in use, try again")
        try:
            timed = classify_timed(classifier, picture, self.server.top_k, decode_s=decode_s)
        except EdgeError as e:
            return self._error(400, str(e))
        finally:
            self.server.classifiers.put(classifier)
        result = {**json_answer("upload", timed.predictions, self.server.threshold),
                  "timings_ms": _ms(timed.seconds), "total_ms": round(timed.total * 1e3, 3)}
        return self._json(200, result)

    def _events(self) -> None:
        self._stream("text/event-stream", lambda result, jpeg: f"data: {json.dumps(result)}\n\n".encode())

    def _mjpeg(self) -> None:
        self._stream("multipart/x-mixed-replace; boundary=frame",
                     lambda result, jpeg: b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                     + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")

    def _stream(self, content_type: str, part: Callable[[dict, bytes], bytes]) -> None:
        """Send `part(result, frame_jpeg)` for every new camera result until the client or the server goes."""
        live = self.server.live
        if live is None:
            return self._error(404, "no camera (--camera SOURCE)")
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        version = 0
        try:
            while not self.server.closing.is_set():
                version, result, jpeg = live.wait_newer(version, 1.0)
                if result is not None:
                    self.wfile.write(part(result, jpeg))
                    self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


def start(model_path: Path, address: tuple[str, int], *, camera: str | None = None, top_k: int = 3,
          threshold: float | None = None, threads: int = 1, verify: bool = True,
          opener: Callable[[str], FrameSource] = open_source, token: str | None = None,
          allow_hosts: Sequence[str] = ()) -> Server:
    """Open the camera (if any), bind the server and start the capture thread; serve with
    `server.serve_forever()` and stop with `stop(server)`. With a `token`, every request but /healthz
    must carry it (None: anyone who can connect may use it). `allow_hosts`: Host names to answer besides
    the server's own (serve_host)."""
    live = capture = None
    if camera is not None:
        live = Live()
        capture = CaptureLoop(Classifier(model_path, num_threads=threads, verify=verify), camera, live, top_k,
                              threshold, opener)
    try:
        server = Server(address, Path(model_path), top_k, threshold, live, capture, threads, verify, token,
                        allow_hosts)
    except OSError as e:
        if capture is not None and capture.src is not None:
            capture.src.close()
        raise EdgeError(f"--serve {address[0]}:{address[1]}: cannot listen there ({e.strerror or e})") from e
    if capture is not None:
        capture.start()
    return server


def stop(server: Server) -> None:
    """Stop serving (from another thread than serve_forever's), end the streams, release the camera."""
    server.closing.set()
    server.shutdown()
    server.server_close()
    if server.capture is not None:
        server.capture.stop.set()
        server.capture.join(timeout=5)


def run(model_path: Path, address: tuple[str, int], *, camera: str | None, top_k: int, threshold: float | None,
        threads: int, verify: bool, access: Access | None = None, allow_hosts: Sequence[str] = (),
        out: TextIO | None = None) -> int:
    """The `--serve` command: serve until Ctrl-C or SIGTERM, then shut down cleanly; exit status.
    `access` is serve_auth.resolve's rule (None: open, as on loopback)."""
    out = out or sys.stdout
    access = access or Access(None, "loopback")
    server = start(model_path, address, camera=camera, top_k=top_k, threshold=threshold, threads=threads,
                   verify=verify, token=access.token, allow_hosts=allow_hosts)
    host, port = server.server_address[:2]
    everywhere = host in ("0.0.0.0", "")
    shown = "127.0.0.1" if everywhere else host
    print(f"edge-classify: serving {Path(model_path).name}" + (f" on camera {camera}" if camera else "")
          + f": open http://{shown}:{port}/{url_query(access)}" + (" (listening on all interfaces)" if everywhere else ""),
          file=out, flush=True)
    for line in notice(access, socket.gethostname() if everywhere else shown, port):
        print(f"edge-classify: {line}", file=out, flush=True)
    stopping = threading.Event()

    def on_signal(signum, frame):
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=stop, args=(server,), daemon=True).start()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if not stopping.is_set():
            stop(server)
        elif server.capture is not None:
            server.capture.join(timeout=5)
    print("edge-classify: server stopped" + (", camera released" if camera else ""), file=out, flush=True)
    return 0
