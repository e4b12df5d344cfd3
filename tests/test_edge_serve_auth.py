"""`--serve` on a network address asks for a token: the rule, the 401/200 matrix over real HTTP on a 0.0.0.0
bind, a bind to a non-loopback address of a private network namespace, the token kept out of every log line,
and the page in a real headless Chromium (the printed URL, the cookie, the threshold control)."""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from edge_runtime import serve, serve_auth
from edge_runtime.errors import EdgeError
from edge_runtime.serve_auth import Access, Gate, resolve

try:
    import browser
    from edge_models import REPO, fashion_mnist, garment_video
except ImportError:  # tests/ collected as a package
    from tests import browser
    from tests.edge_models import REPO, fashion_mnist, garment_video

cv2 = pytest.importorskip("cv2")
TOKEN = "test-token-0123456789abcdef"
ENDPOINTS = [("GET", "/"), ("GET", "/stream.mjpg"), ("GET", "/api/events"), ("GET", "/api/latest"),
             ("GET", "/input.png"), ("POST", "/api/classify")]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return garment_video(tmp_path_factory.mktemp("auth-video") / "clip.avi")


@pytest.fixture(scope="module")
def photo() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(fashion_mnist("t10k", 1)[0][0]).save(buf, "PNG")
    return buf.getvalue()


def _serving(srv):
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    t0 = time.monotonic()
    while srv.capture is not None and srv.capture.frames < 3:
        assert time.monotonic() - t0 < 20, "no frames"
        time.sleep(0.05)
    return thread


@pytest.fixture(scope="module")
def network_server(models, video):
    """Bound to 0.0.0.0 (every interface) with a token; the tests connect through 127.0.0.1."""
    srv = serve.start(models / "model_int8.tflite", ("0.0.0.0", 0), camera=str(video), token=TOKEN)
    thread = _serving(srv)
    yield srv
    serve.stop(srv)
    thread.join(timeout=5)


def _request(port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None,
             host: str = "127.0.0.1"):
    """(status, headers, body); a stream's body is not read past its first bytes."""
    conn = http.client.HTTPConnection(host, port, timeout=20)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    streaming = (r.getheader("Content-Type") or "").startswith(("multipart/", "text/event-stream"))
    data = r.read(16) if streaming else r.read()
    conn.close()
    return r.status, r, data


# --- the rule ----------------------------------------------------------------------------------------

def test_loopback_is_open_and_any_other_address_gets_a_fresh_token():
    assert resolve("127.0.0.1") == Access(None, "loopback") and resolve("localhost").token is None
    assert resolve("127.8.9.10").token is None and resolve("::1").token is None
    made = [resolve(host) for host in ("0.0.0.0", "192.168.1.20", "raspberrypi.local", "::")]
    assert all(a.source == "generated" and len(a.token) == 32 for a in made)
    assert len({a.token for a in made}) == len(made)                  # a new one every start


def test_a_given_token_is_required_everywhere_and_never_shown():
    assert resolve("127.0.0.1", TOKEN) == Access(TOKEN, "--token")
    env = resolve("0.0.0.0", environ={"FASHION_EDGE_TOKEN": TOKEN})
    assert env == Access(TOKEN, "$FASHION_EDGE_TOKEN") and not env.shown
    assert resolve("0.0.0.0", "x" * 16, environ={"FASHION_EDGE_TOKEN": TOKEN}).token == "x" * 16   # flag wins
    assert resolve("0.0.0.0", no_token=True) == Access(None, "--no-token")
    assert serve_auth.url_query(env) == "" and TOKEN not in " ".join(serve_auth.notice(env, "pi", 8080))


@pytest.mark.parametrize("token, words", [("short", "has 5 characters; use at least 16"),
                                          ("with space in it 123", "may only use letters"),
                                          ("semi;colon-0123456789", "may only use letters")])
def test_unusable_tokens_are_refused_with_the_reason(token, words):
    with pytest.raises(EdgeError, match=words):
        resolve("0.0.0.0", token)


def test_token_and_no_token_together_are_refused(models, capsys):
    from edge_runtime.cli import main
    assert main(["--model", str(models / "model_int8.tflite"), "--serve", "0.0.0.0:0", "--token", TOKEN,
                 "--no-token"]) == 2
    assert "contradict" in capsys.readouterr().err


def test_every_check_compares_in_constant_time(monkeypatch):
    """All three ways go through hmac.compare_digest (a timing attack learns nothing); near misses fail."""
    import hmac
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(serve_auth.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    gate = Gate(TOKEN, 8080)
    assert gate.decide(f"/?token={TOKEN}", {}).authorized
    assert gate.decide("/", {"Authorization": f"Bearer {TOKEN}"}).authorized
    assert gate.decide("/", {"Cookie": f"edge_token_8080={TOKEN}"}).authorized
    for wrong in (TOKEN[:-1], TOKEN + "x", TOKEN[:-1] + "g", "", TOKEN.upper()):
        assert not gate.decide(f"/?token={wrong}", {"Authorization": f"Bearer {wrong}",
                                                    "Cookie": f"edge_token_8080={wrong}"}).authorized
    assert not gate.decide("/", {"Cookie": f"edge_token_9090={TOKEN}"}).authorized   # another server's cookie
    # three ways for each wrong token, but an empty ?token= is no token at all (parse_qs drops it)
    assert len(calls) == 3 + 4 * 3 + 2 and all(b == TOKEN.encode() for _, b in calls)


# --- a real 0.0.0.0 bind -----------------------------------------------------------------------------

@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_without_the_token_every_endpoint_is_401_json(network_server, photo, method, path):
    port = network_server.server_address[1]
    wrong = "x" * len(TOKEN)
    for headers, query in [({}, ""), ({}, f"?token={wrong}"), ({"Authorization": f"Bearer {wrong}"}, ""),
                           ({"Cookie": f"edge_token_{port}={wrong}"}, ""), ({"X-Token": TOKEN}, "")]:
        status, r, body = _request(port, method, path + query, headers, photo if method == "POST" else None)
        assert status == 401, (path, headers, query)
        assert r.getheader("Content-Type") == "application/json" and r.getheader("WWW-Authenticate")
        assert "token is required" in json.loads(body)["error"] and r.getheader("Set-Cookie") is None


@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_with_the_token_by_query_header_or_cookie_every_endpoint_answers(network_server, photo, method, path):
    port = network_server.server_address[1]
    ways = {"query": (f"?token={TOKEN}", {}), "header": ("", {"Authorization": f"Bearer {TOKEN}"}),
            "cookie": ("", {"Cookie": f"edge_token_{port}={TOKEN}"})}
    for way, (query, headers) in ways.items():
        status, r, body = _request(port, method, path + query, headers, photo if method == "POST" else None)
        assert status == 200, (path, way, body)
        cookie = r.getheader("Set-Cookie")
        if way == "query":       # the page's own requests then carry it
            assert cookie == f"edge_token_{port}={TOKEN}; Path=/; HttpOnly; SameSite=Strict"
        else:
            assert cookie is None
        if path == "/api/latest":
            assert json.loads(body)["label"] in ("Trouser", "Bag")
        if path == "/stream.mjpg":
            assert body.startswith(b"--frame")


def test_an_upload_without_the_token_is_refused_before_its_body_is_read(network_server):
    import socket
    with socket.create_connection(("127.0.0.1", network_server.server_address[1]), timeout=10) as s:
        s.sendall(b"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999999999\r\n\r\n")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 401") and b"token is required" in reply


def test_healthz_answers_without_the_token_but_says_only_ok(network_server):
    port = network_server.server_address[1]
    status, _, body = _request(port, "GET", "/healthz")
    assert status == 200 and json.loads(body) == {"ok": True}
    status, _, body = _request(port, "GET", "/healthz", {"Authorization": f"Bearer {TOKEN}"})
    full = json.loads(body)
    assert status == 200 and full["camera"].endswith("clip.avi") and full["frames"] > 0 and "threshold" in full


def test_loopback_without_a_token_is_unchanged(models, video):
    srv = serve.start(models / "model_int8.tflite", ("127.0.0.1", 0), camera=str(video))
    thread = _serving(srv)
    try:
        port = srv.server_address[1]
        for method, path in ENDPOINTS[:5]:
            status, r, _ = _request(port, method, path)
            assert status == 200 and r.getheader("Set-Cookie") is None, path
        assert "camera" in json.loads(_request(port, "GET", "/healthz")[2])
    finally:
        serve.stop(srv)
        thread.join(timeout=5)


# --- the command line: what it prints, and that a token never reaches a log ---------------------------

def _cli(models, video, *args, env=None):
    script = Path(sys.executable).with_name("edge-classify")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "edge_runtime"]
    environ = {k: v for k, v in os.environ.items() if k != "FASHION_EDGE_TOKEN"}
    return subprocess.Popen([*cmd, "--model", str(models / "model_int8.tflite"), "--camera", str(video), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**environ, **(env or {})})


def _stop(p) -> tuple[str, str]:
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    return out, err


def _port(line: str) -> int:
    return int(line.split("http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def _latest(port: int, query: str = "", headers: dict | None = None) -> int:
    """The status of /api/latest once the camera has given a frame (503 until then)."""
    t0 = time.monotonic()
    while (status := _request(port, "GET", "/api/latest" + query, headers)[0]) == 503:
        assert time.monotonic() - t0 < 20, "no frame"
        time.sleep(0.1)
    return status


def test_a_network_bind_prints_the_url_with_a_new_token(models, video):
    p = _cli(models, video, "--serve", "0.0.0.0:0")
    try:
        first, second, third = (p.stdout.readline() for _ in range(3))
        assert "open http://127.0.0.1:" in first and "(listening on all interfaces)" in first, first
        token = first.split("?token=", 1)[1].split()[0]
        assert len(token) == 32 and f"?token={token}" in second and "from another device" in second
        assert "made at start" in third
        port = _port(first)
        assert _latest(port) == 401
        assert _latest(port, f"?token={token}") == 200
    finally:
        out, err = _stop(p)
    assert (first + second + third + out + err).count(token) == 2          # the two URLs, nowhere else


def test_a_given_token_is_never_printed_or_logged(models, video):
    p = _cli(models, video, "--serve", "0.0.0.0:0", env={"FASHION_EDGE_TOKEN": TOKEN})
    try:
        first, second = p.stdout.readline(), p.stdout.readline()
        assert "?token=" not in first and "from $FASHION_EDGE_TOKEN" in second and "YOUR-TOKEN" in second
        port = _port(first)
        for query, headers in [(f"?token={TOKEN}", {}), ("", {"Authorization": f"Bearer {TOKEN}"}),
                               ("", {"Cookie": f"edge_token_{port}={TOKEN}"}), (f"?token={TOKEN}x", {}), ("", {})]:
            for path in ("/", "/api/latest", "/healthz", "/nope"):
                _request(port, "GET", path + query, headers)
        _request(port, "POST", f"/api/classify?token={TOKEN}", body=b"not an image")
    finally:
        out, err = _stop(p)
    assert TOKEN not in first + second + out + err


def test_no_token_is_the_explicit_opt_out_and_says_so(models, video):
    p = _cli(models, video, "--serve", "0.0.0.0:0", "--no-token")
    try:
        first, second = p.stdout.readline(), p.stdout.readline()
        assert "?token=" not in first and second.startswith("edge-classify: --no-token: no token is asked")
        assert _latest(_port(first)) == 200
    finally:
        _stop(p)


NETNS_CLIENT = textwrap.dedent("""
    import http.client, json, subprocess, sys
    ADDRESS = "192.0.2.10"     # TEST-NET-1, on a veth of this private network namespace only
    p = subprocess.Popen(sys.argv[1:] + ["--serve", ADDRESS + ":0"], stdout=subprocess.PIPE, text=True)
    first = p.stdout.readline()
    port = int(first.split("http://" + ADDRESS + ":", 1)[1].split("/", 1)[0])
    token = first.split("?token=", 1)[1].split()[0]
    def status(path, headers={}):
        c = http.client.HTTPConnection(ADDRESS, port, timeout=20)
        c.request("GET", path, headers=headers)
        return c.getresponse().status
    print(json.dumps({"first": first, "no_token": status("/"), "query": status("/?token=" + token),
                      "header": status("/", {"Authorization": "Bearer " + token}), "healthz": status("/healthz")}))
    p.terminate()
    p.wait(timeout=20)
""")


def test_a_bind_to_a_non_loopback_address_asks_for_the_token(models, video, tmp_path):
    """A real interface address (a veth in a network namespace of this test's own), as `--serve 192.168.1.20:8080`
    would bind on a Pi; client and server both inside it."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare and ip for a private network namespace")
    script = Path(sys.executable).with_name("edge-classify")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "edge_runtime"]
    client = tmp_path / "client.py"
    client.write_text(NETNS_CLIENT)
    setup = ("ip link set lo up && ip link add v0 type veth peer name v1 && ip addr add 192.0.2.10/24 dev v0 && "
             "ip link set v1 up && ip link set v0 up && exec \"$@\"")
    done = subprocess.run(["unshare", "--net", "sh", "-c", setup, "sh", sys.executable, str(client), *cmd,
                           "--model", str(models / "model_int8.tflite"), "--camera", str(video)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    if done.returncode != 0 and "Operation not permitted" in done.stderr:
        pytest.skip(f"no private network namespace here: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert "open http://192.0.2.10:" in got["first"] and "?token=" in got["first"]
    assert (got["no_token"], got["query"], got["header"], got["healthz"]) == (401, 200, 200, 200)


# --- the page in a real browser ----------------------------------------------------------------------

@pytest.mark.slow
def test_browser_opens_the_printed_url_sees_the_stream_and_keeps_the_token_in_a_cookie(models, video):
    p = _cli(models, video, "--serve", "0.0.0.0:0")
    try:
        url = p.stdout.readline().split("open ", 1)[1].split()[0]
        assert "?token=" in url
        with browser.sync_playwright() as pw:
            chromium = browser.launch(pw)
            page = chromium.new_page()
            assert page.goto(url).status == 200
            page.wait_for_function("document.getElementById('frame').naturalWidth > 0", timeout=20000)   # MJPEG
            page.wait_for_function("['Trouser', 'Bag'].includes(document.getElementById('label').textContent)",
                                   timeout=20000)
            assert "token" not in page.evaluate("location.href")            # taken out of the address bar
            page.reload()                                                   # the cookie carries it now
            page.wait_for_function("document.getElementById('frame').naturalWidth > 0", timeout=20000)
            stranger = chromium.new_context().new_page()                    # no cookie, no token
            response = stranger.goto(url.split("?", 1)[0])
            assert response.status == 401 and "token is required" in stranger.content()
            chromium.close()
    finally:
        _stop(p)


@pytest.mark.slow
def test_browser_threshold_control_turns_answers_unsure_and_shows_the_flag(network_server):
    port = network_server.server_address[1]
    with browser.sync_playwright() as pw:
        chromium = browser.launch(pw)
        page = chromium.new_page()
        page.goto(f"http://127.0.0.1:{port}/?token={TOKEN}")
        labels = "['Trouser', 'Bag'].includes(document.getElementById('label').textContent)"
        page.wait_for_function(labels, timeout=20000)
        assert page.inner_text("#threshold-flag") == "no --threshold"
        page.focus("#threshold")
        page.keyboard.press("End")                                          # moved to the top: 1.00
        page.wait_for_function("document.getElementById('label').textContent === 'unsure'", timeout=10000)
        assert page.inner_text("#threshold-flag") == "--threshold 1.00"
        assert page.inner_text("#threshold-value") == "1.00"
        page.keyboard.press("Home")
        for _ in range(30):
            page.keyboard.press("ArrowRight")                               # 0.30: the garments are surer than that
        assert page.inner_text("#threshold-flag") == "--threshold 0.30"
        page.wait_for_function(labels, timeout=10000)
        chromium.close()
