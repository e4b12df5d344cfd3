"""`--serve` answers only requests that name it in their Host header (a DNS-rebinding defence, as Jupyter's): the
rule, forged Host headers over real HTTP on a loopback bind and on a 0.0.0.0 bind with the token, `--allow-host`,
and a real headless Chromium that resolves attacker.example to this server (a rebinding, done by its own resolver)
and opens the network URL the command prints."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from edge_runtime import serve
from edge_runtime.errors import EdgeError
from edge_runtime.serve_host import HostRule, check_allowed, machine_names, split_host

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
HOSTNAME = socket.gethostname()


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return garment_video(tmp_path_factory.mktemp("host-video") / "clip.avi")


@pytest.fixture(scope="module")
def photo() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(fashion_mnist("t10k", 1)[0][0]).save(buf, "PNG")
    return buf.getvalue()


def _started(models, video, address, **kwargs):
    srv = serve.start(models / "model_int8.tflite", address, camera=str(video), **kwargs)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    t0 = time.monotonic()
    while srv.capture.frames < 3:
        assert time.monotonic() - t0 < 20, "no frames"
        time.sleep(0.05)
    return srv, thread


@pytest.fixture(scope="module")
def loopback_server(models, video):
    srv, thread = _started(models, video, ("127.0.0.1", 0), allow_hosts=["proxy.example"])
    yield srv
    serve.stop(srv)
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def network_server(models, video):
    """Bound to 0.0.0.0 with a token; the tests connect through 127.0.0.1 and say another name in Host."""
    srv, thread = _started(models, video, ("0.0.0.0", 0), token=TOKEN)
    yield srv
    serve.stop(srv)
    thread.join(timeout=5)


def _request(port: int, method: str, path: str, host: str | None, headers: dict | None = None,
             body: bytes | None = None):
    """(status, response, body) for a request to 127.0.0.1:port that says `host` in its Host header (None:
    no Host header at all); a stream's body is not read past its first bytes."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for name, value in ([] if host is None else [("Host", host)]) + list((headers or {}).items()):
        conn.putheader(name, value)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    r = conn.getresponse()
    streaming = (r.getheader("Content-Type") or "").startswith(("multipart/", "text/event-stream"))
    data = r.read(16) if streaming else r.read()
    conn.close()
    return r.status, r, data


def _refused(status: int, r, data: bytes) -> bool:
    return (status == 403 and r.getheader("Content-Type") == "application/json"
            and "DNS rebinding" in json.loads(data)["error"] and r.getheader("Set-Cookie") is None)


# --- the rule ----------------------------------------------------------------------------------------

def test_the_host_name_is_read_without_port_case_or_trailing_dot():
    assert split_host("LocalHost:8080") == "localhost" and split_host("localhost.") == "localhost"
    assert split_host("[::1]:8080") == "::1" and split_host("127.0.0.1") == "127.0.0.1"
    assert split_host("raspberrypi.local:80") == "raspberrypi.local"
    for bad in ("", " ", "a b", "http://x/", "x:y", "x:123456", "[::1", "a/b", "x@y"):
        assert split_host(bad) is None, bad


def test_a_loopback_bind_answers_its_loopback_names_only():
    rule = HostRule("127.0.0.1", hostname="raspberrypi")
    for ok in ("localhost", "localhost:8080", "127.0.0.1:8080", "127.0.0.1", "[::1]:8080", "[::1]", "127.0.1.1:80"):
        assert rule.allows([ok]), ok
    for bad in ("attacker.example", "attacker.example:8080", "raspberrypi", "raspberrypi.local", "192.168.1.20",
                "localhost.attacker.example", "127.0.0.1.nip.io", ""):
        assert not rule.allows([bad]), bad
    assert not rule.allows(None) and not rule.allows([]) and not rule.allows(["localhost", "attacker.example"])


def test_a_network_bind_also_answers_the_machines_names_and_addresses():
    rule = HostRule("0.0.0.0", hostname="raspberrypi")
    for ok in ("raspberrypi:8080", "RaspberryPi", "raspberrypi.local:8080", "raspberrypi.local.", "localhost:8080",
               "127.0.0.1:8080"):
        assert rule.allows([ok]), ok
    for bad in ("attacker.example:8080", "raspberrypi.attacker.example", "pi.local", "192.0.2.77:8080"):
        assert not rule.allows([bad]), bad       # 192.0.2.77 (TEST-NET-1) is no address of this machine
    assert HostRule("0.0.0.0").allows([f"{HOSTNAME}:8080"]) and HostRule("0.0.0.0").allows([f"{HOSTNAME}.local"])
    assert machine_names("pi.example.org") >= {"pi.example.org", "pi", "pi.local"}
    specific = HostRule("192.0.2.10", hostname="raspberrypi")
    assert specific.allows(["192.0.2.10:8080"]) and specific.allows(["raspberrypi.local"])
    assert not specific.allows(["192.0.2.11:8080"])


def test_allow_host_adds_names_and_refuses_what_is_no_host_name():
    rule = HostRule("127.0.0.1", ["Proxy.Example", "pi.example.org:443"])
    assert rule.allows(["proxy.example"]) and rule.allows(["proxy.example:443"]) and rule.allows(["pi.example.org"])
    assert not rule.allows(["other.example"])
    for bad in ("https://proxy.example/", "proxy example", ""):
        with pytest.raises(EdgeError, match="--allow-host"):
            check_allowed([bad])


# --- a real loopback bind ------------------------------------------------------------------------------

@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_a_foreign_host_is_refused_on_every_endpoint_of_a_loopback_bind(loopback_server, photo, method, path):
    port = loopback_server.server_address[1]
    for host in (f"attacker.example:{port}", "attacker.example", f"{HOSTNAME}.attacker.example:{port}", None):
        got = _request(port, method, path, host, body=photo if method == "POST" else None)
        assert _refused(*got), (path, host, got[0])


@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_the_servers_own_names_are_answered_on_a_loopback_bind(loopback_server, photo, method, path):
    port = loopback_server.server_address[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost", f"[::1]:{port}", "proxy.example"):
        status, r, body = _request(port, method, path, host, body=photo if method == "POST" else None)
        assert status == 200, (path, host, body)
        if path == "/api/latest":
            assert json.loads(body)["label"] in ("Trouser", "Bag")


def test_healthz_answers_a_foreign_host_but_says_only_ok(loopback_server):
    port = loopback_server.server_address[1]
    status, _, body = _request(port, "GET", "/healthz", f"attacker.example:{port}")
    assert status == 200 and json.loads(body) == {"ok": True}          # not the camera URL (it may hold a password)
    status, _, body = _request(port, "GET", "/healthz", f"localhost:{port}")
    assert status == 200 and json.loads(body)["camera"].endswith("clip.avi")


def test_an_upload_with_a_foreign_host_is_refused_before_its_body_is_read(loopback_server):
    with socket.create_connection(loopback_server.server_address[:2], timeout=10) as s:
        s.sendall(b"POST /api/classify HTTP/1.1\r\nHost: attacker.example\r\nContent-Length: 999999999\r\n\r\n")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 403") and b"DNS rebinding" in reply


def test_two_host_headers_are_refused(loopback_server):
    port = loopback_server.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET /api/latest HTTP/1.1\r\nHost: localhost:{port}\r\nHost: attacker.example\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 403")


# --- a real 0.0.0.0 bind with the token ---------------------------------------------------------------

@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_a_foreign_host_is_refused_on_a_network_bind_even_with_the_token(network_server, photo, method, path):
    port = network_server.server_address[1]
    for host in (f"attacker.example:{port}", None):
        for headers in ({"Authorization": f"Bearer {TOKEN}"}, {"Cookie": f"edge_token_{port}={TOKEN}"}, {}):
            got = _request(port, method, path + "?token=" + TOKEN, host, headers, photo if method == "POST" else None)
            assert _refused(*got), (path, host, headers, got[0])      # 403 before the token is looked at


@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_the_machines_names_are_answered_on_a_network_bind_with_the_token(network_server, photo, method, path):
    port = network_server.server_address[1]
    for host in (f"{HOSTNAME}:{port}", f"{HOSTNAME}.local:{port}", f"127.0.0.1:{port}", f"localhost:{port}"):
        status, _, body = _request(port, method, path, host, {"Authorization": f"Bearer {TOKEN}"},
                                   photo if method == "POST" else None)
        assert status == 200, (path, host, body)
        assert _request(port, method, path, host, body=photo if method == "POST" else None)[0] == 401


# --- the command line --------------------------------------------------------------------------------

def _cli(models, video, *args):
    environ = {k: v for k, v in os.environ.items() if k != "FASHION_EDGE_TOKEN"}
    return subprocess.Popen([sys.executable, "-m", "edge_runtime", "--model", str(models / "model_int8.tflite"),
                             "--camera", str(video), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env=environ)


def _stop(p) -> str:
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    return out


def _port(line: str) -> int:
    return int(line.split("http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def _latest(port: int, host: str) -> int:
    """The status of /api/latest once the camera has given a frame (503 until then)."""
    t0 = time.monotonic()
    while (status := _request(port, "GET", "/api/latest", host)[0]) == 503:
        assert time.monotonic() - t0 < 20, "no frame"
        time.sleep(0.1)
    return status


def test_allow_host_on_the_command_line_lets_a_proxy_name_through(models, video):
    p = _cli(models, video, "--serve", "127.0.0.1:0", "--allow-host", "proxy.example", "--allow-host", "pi.example.org")
    try:
        port = _port(p.stdout.readline())
        assert _latest(port, "proxy.example") == 200 and _latest(port, "pi.example.org:443") == 200
        assert _latest(port, f"127.0.0.1:{port}") == 200 and _latest(port, f"localhost:{port}") == 200
        assert _latest(port, f"attacker.example:{port}") == 403
    finally:
        _stop(p)


def test_allow_host_is_refused_without_serve_or_with_a_url(models, capsys):
    from edge_runtime.cli import main
    with pytest.raises(SystemExit):
        main(["--model", str(models / "model_int8.tflite"), "--allow-host", "proxy.example", "x.png"])
    assert "--allow-host are for --serve" in capsys.readouterr().err
    assert main(["--model", str(models / "model_int8.tflite"), "--serve", "127.0.0.1:0",
                 "--allow-host", "https://proxy.example/"]) == 2
    assert "--allow-host 'https://proxy.example/'" in capsys.readouterr().err


def test_help_explains_allow_host(capsys):
    from edge_runtime.cli import main
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--allow-host NAME" in text and "DNS rebinding" in text and "reverse proxy" in text


# --- a real browser ----------------------------------------------------------------------------------

def _chromium(pw, *resolver_rules: str):
    """Headless Chromium whose own resolver maps names to 127.0.0.1 (what a rebinding attacker's DNS does)."""
    args = browser.ARGS + ([f"--host-resolver-rules={', '.join(resolver_rules)}"] if resolver_rules else [])
    return pw.chromium.launch(executable_path=browser.CHROMIUM, args=args)


@pytest.mark.slow
def test_browser_led_to_the_server_by_a_rebound_name_gets_403(loopback_server):
    port = loopback_server.server_address[1]
    with browser.sync_playwright() as pw:
        chromium = _chromium(pw, "MAP attacker.example 127.0.0.1")
        page = chromium.new_page()
        response = page.goto(f"http://attacker.example:{port}/api/latest")
        assert response.status == 403 and "DNS rebinding" in page.content()
        response = page.goto(f"http://attacker.example:{port}/")
        assert response.status == 403
        assert page.goto(f"http://127.0.0.1:{port}/").status == 200           # the same server, by its own name
        page.wait_for_function("['Trouser', 'Bag'].includes(document.getElementById('label').textContent)",
                               timeout=20000)
        chromium.close()


@pytest.mark.slow
def test_browser_opens_the_printed_network_url_by_the_machines_name(models, video):
    """`--serve 0.0.0.0:0` prints http://<hostname>:PORT/?token=… for other devices; Chromium opens exactly that
    (its resolver maps the host name here, as the LAN's DNS or mDNS would) and sees the stream and the label."""
    p = _cli(models, video, "--serve", "0.0.0.0:0")
    try:
        first, second = p.stdout.readline(), p.stdout.readline()
        url = second.split("from another device: ", 1)[1].split()[0]
        assert url.startswith(f"http://{HOSTNAME}:{_port(first)}/?token="), second
        with browser.sync_playwright() as pw:
            chromium = _chromium(pw, f"MAP {HOSTNAME} 127.0.0.1")
            page = chromium.new_page()
            assert page.goto(url).status == 200
            page.wait_for_function("document.getElementById('frame').naturalWidth > 0", timeout=20000)   # MJPEG
            page.wait_for_function("['Trouser', 'Bag'].includes(document.getElementById('label').textContent)",
                                   timeout=20000)
            chromium.close()
    finally:
        _stop(p)
