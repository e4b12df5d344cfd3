"""`make bundle`: what is inside, the offline bundle installed by its install.sh into a fresh venv with the
network cut (this machine's x86_64 wheels; `make pi-check` does the same with the aarch64 ones under
emulation), `edge-classify photo.jpg` through the installed command, and the service's systemd unit checked
by `systemd-analyze verify` and its command run for real."""

from __future__ import annotations

import http.client
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from pipeline.bundle import tarball
from pipeline.release import provenance

try:
    from edge_models import REPO, fashion_mnist, garment_video
except ImportError:  # tests/ collected as a package
    from tests.edge_models import REPO, fashion_mnist, garment_video

RELEASE = REPO / "exported"
TOP = f"fashion-edge-device-{tarball.project_metadata()['version']}"


def _members(archive: Path) -> dict[str, int]:
    with tarfile.open(archive) as tar:
        return {m.name: m.size for m in tar.getmembers() if m.isfile()}


def test_bundle_holds_the_runtime_wheel_the_release_and_install_sh_only(tmp_path):
    archive = tarball.build(RELEASE, tmp_path / "dist", log=lambda m: None)
    assert archive.name == f"{TOP}.tar.gz"
    names = set(_members(archive))
    wheel = f"{TOP}/fashion_edge_runtime-{tarball.project_metadata()['version']}-py3-none-any.whl"
    assert names == {f"{TOP}/install.sh", f"{TOP}/BUNDLE.json", wheel,
                     *(f"{TOP}/release/{f}" for f in tarball.RELEASE_FILES)}
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    top = tmp_path / "x" / TOP
    assert os.access(top / "install.sh", os.X_OK)
    info = json.loads((top / "BUNDLE.json").read_text())
    for name, entry in info["files"].items():                 # every file is what BUNDLE.json says
        assert provenance.sha256(top / name) == entry["sha256"], name
    for f in ("model_int8.tflite", "manifest.json"):
        assert (top / "release" / f).read_bytes() == (RELEASE / f).read_bytes()
    with zipfile.ZipFile(top / Path(wheel).name) as whl:
        packages = {n.split("/")[0] for n in whl.namelist()}
        metadata = whl.read(next(n for n in whl.namelist() if n.endswith("/METADATA"))).decode()
        entry_points = whl.read(next(n for n in whl.namelist() if n.endswith("/entry_points.txt"))).decode()
    assert packages == {"edge_runtime", f"fashion_edge_runtime-{info['version']}.dist-info"}      # no pipeline/
    assert "edge_runtime/serve_page.html" in zipfile.ZipFile(top / Path(wheel).name).namelist()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert not [r for r in requires if any(w in r.lower() for w in ("tensorflow", "keras", "tf2onnx", "onnx=="))]
    assert any("ai-edge-litert" in r and 'extra == "tflite"' in r for r in requires)
    assert "edge-classify = edge_runtime.cli:main" in entry_points


def test_a_release_without_its_models_is_refused_naming_what_is_missing(tmp_path):
    (tmp_path / "release").mkdir()
    shutil.copy(RELEASE / "manifest.json", tmp_path / "release")
    with pytest.raises(tarball.PipelineError, match="missing model_int8.tflite, model_int8.onnx"):
        tarball.build(tmp_path / "release", tmp_path / "dist", log=lambda m: None)
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


def _offline(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """`cmd` with no network at all (a network namespace of its own), when this machine allows one."""
    prefix = ["unshare", "--net"] if os.geteuid() == 0 and shutil.which("unshare") else []
    return subprocess.run(prefix + cmd, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def offline_bundle(tmp_path_factory) -> Path:
    """The offline bundle for this machine (x86_64, Python 3.11): LiteRT and OpenCV wheels."""
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the x86_64 offline bundle is for Python 3.11")
    out = tmp_path_factory.mktemp("bundle")
    archive = tarball.build(RELEASE, out / "dist", with_wheels=True, target="x86_64-cp311", extras=["tflite", "camera"],
                           log=lambda m: None)
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    return out / TOP


@pytest.fixture(scope="module")
def installed(offline_bundle, tmp_path_factory) -> dict:
    """install.sh --service run once with the network cut, into a fresh prefix (PREFIX/venv, PREFIX/release,
    BIN/edge-classify) and with --unit-dir (the unit and its env file), for a video file on loopback."""
    home = tmp_path_factory.mktemp("device")
    video = garment_video(tmp_path_factory.mktemp("svc-video") / "clip.avi")
    done = _offline(["sh", str(offline_bundle / "install.sh"), "--prefix", str(home / "fe"), "--bin-dir",
                     str(home / "bin"), "--service", "--unit-dir", str(home / "units"), "--camera", str(video),
                     "--listen", "127.0.0.1:0", "--threshold", "0.6"], env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "offline: the wheels come from" in done.stdout
    return {"home": home, "unit": home / "units" / "fashion-edge.service", "env": home / "fe" / "service.env",
            "out": done.stdout}


@pytest.mark.slow
def test_offline_install_answers_a_photo_with_the_release_as_default_model(installed, tmp_path):
    images, labels = fashion_mnist("t10k", 1)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(255 - images[0]).resize((300, 300)).convert("RGB").save(photo, quality=90)
    env = {k: v for k, v in os.environ.items() if k != "FASHION_EDGE_MODEL"}
    done = _offline([str(installed["home"] / "bin" / "edge-classify"), str(photo)], cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    label = done.stdout.split("\t", 1)[1].split(",")[0].rsplit(" ", 1)[0]
    assert label == "Ankle boot" == json.loads((RELEASE / "manifest.json").read_text())["labels"][labels[0]]
    versions = subprocess.run([str(installed["home"] / "fe" / "venv" / "bin" / "python"), "-c",
                               "import importlib.util as u; print([m for m in ('tensorflow', 'pipeline', 'cv2', "
                               "'ai_edge_litert') if u.find_spec(m)])"], capture_output=True, text=True, cwd=tmp_path)
    assert versions.stdout.strip() == "['cv2', 'ai_edge_litert']"       # no TensorFlow, no pipeline


@pytest.mark.slow
def test_install_refuses_a_backend_the_offline_bundle_has_no_wheels_for(offline_bundle, installed):
    home = installed["home"]
    done = _offline(["sh", str(offline_bundle / "install.sh"), "--backend", "onnx", "--prefix",
                     str(home / "fe"), "--bin-dir", str(home / "bin")])
    assert done.returncode != 0 and "has no wheels for onnx" in done.stderr
    assert (home / "fe" / "venv" / "bin" / "edge-classify").is_file()    # the install before is untouched


def _unit(path: Path) -> dict[str, list[str]]:
    """Key → values of a unit file (the equivalent parse, for the assertions)."""
    keys: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, v = line.split("=", 1)
            keys.setdefault(k, []).append(v)
    return keys


@pytest.mark.slow
def test_service_unit_passes_systemd_analyze_verify(installed, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    done = subprocess.run(["systemd-analyze", "verify", str(installed["unit"])], capture_output=True, text=True)
    assert done.returncode == 0 and str(installed["unit"]) not in done.stderr, done.stderr   # no warning about it
    keys = _unit(installed["unit"])
    assert keys["Restart"] == ["on-failure"] and keys["DynamicUser"] == ["yes"] and keys["User"] == ["fashion-edge"]
    assert keys["SupplementaryGroups"] == ["video"] and keys["NoNewPrivileges"] == ["yes"]
    assert keys["EnvironmentFile"] == [str(installed["env"])] and keys["WantedBy"] == ["multi-user.target"]
    mode = stat.S_IMODE(installed["env"].stat().st_mode)
    token = installed["env"].read_text().strip().split("=", 1)[1]
    assert mode == 0o600 and len(token) == 32 and f"?token={token}" in installed["out"]
    broken = tmp_path / "fashion-edge.service"                    # the same check fails a unit that cannot start
    broken.write_text(installed["unit"].read_text().replace(str(installed["env"].parent / "venv"), "/nonexistent"))
    refused = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True)
    assert refused.returncode != 0 and "is not executable" in refused.stderr


@pytest.mark.slow
def test_service_command_serves_with_its_token_and_stops_cleanly(installed):
    """ExecStart run as systemd would (its EnvironmentFile), on loopback: the token is still asked, never
    printed, and SIGTERM is a clean exit 0 (Restart=on-failure leaves a stopped service stopped)."""
    keys = _unit(installed["unit"])
    argv = shlex.split(keys["ExecStart"][0])
    assert argv[argv.index("--threshold") + 1] == "0.6"
    token = installed["env"].read_text().strip().split("=", 1)[1]
    env = {"PATH": "/usr/bin:/bin", "FASHION_EDGE_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline()
        port = int(first.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])

        def get(path, headers=None):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            conn.request("GET", path, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.read()
        t0 = time.monotonic()
        while get("/api/latest", {"Authorization": f"Bearer {token}"})[0] == 503:
            assert time.monotonic() - t0 < 30
            time.sleep(0.1)
        assert get("/api/latest")[0] == 401
        status, body = get("/api/latest", {"Authorization": f"Bearer {token}"})
        assert status == 200 and json.loads(body)["label"] in ("Trouser", "Bag", "unsure")
        assert json.loads(get("/healthz", {"Authorization": f"Bearer {token}"})[1])["threshold"] == 0.6
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20)
    assert p.returncode == 0 and token not in first + out + err
