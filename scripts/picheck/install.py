"""The device bundle, installed in the root the way a user installs it on a Pi with no network.

`make bundle-offline`'s archive (pipeline.bundle.tarball, the aarch64 cp311 wheels included) is copied into the
root, unpacked with the root's tar and installed by its own install.sh, all under emulation and in a
network namespace with nothing in it. Every run starts from a fresh venv: what is checked is what a user gets.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pipeline.bundle import tarball

from .common import GUEST, CheckError, log, run
from .root import Root

PREFIX = "/opt/fashion-edge"                   # install.sh's default as root
VENV_PYTHON = f"{PREFIX}/venv/bin/python"
COMMAND = "edge-classify"                      # on the root's PATH: /usr/local/bin/edge-classify
BACKENDS = "tflite,onnx"                       # both runtimes: both int8 models are compared


def build_bundle(model_dir: Path, out: Path) -> Path:
    """The offline bundle of `model_dir`, exactly as `make bundle-offline` makes it."""
    t = time.monotonic()
    archive = tarball.build(model_dir, out, with_wheels=True, target="aarch64-cp311", log=log)
    log(f"bundle: {archive.name}, {archive.stat().st_size / 1e6:.1f} MB, made in {time.monotonic() - t:.0f} s")
    return archive


def network_inside(root: Root) -> list[str]:
    """The network interfaces a program in the root sees (only 'lo', down: nothing can be reached)."""
    res = run(root.command(["/bin/cat", "/proc/net/dev"]))
    return [line.split(":")[0].strip() for line in res.stdout.splitlines()[2:] if ":" in line]


def install(root: Root, archive: Path) -> float:
    """Unpack and run install.sh in the root (as root: into /opt/fashion-edge); seconds it took."""
    guest = root.path / GUEST.lstrip("/") / "bundle"
    shutil.rmtree(guest, ignore_errors=True)
    guest.mkdir(parents=True)
    shutil.copy2(archive, guest / archive.name)
    for old in (root.path / PREFIX.lstrip("/"), root.path / "usr/local/bin" / COMMAND):
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    top = archive.name.split("-offline-")[0]
    script = (f"cd {GUEST}/bundle && tar xzf {archive.name} && ./{top}/install.sh --backend {BACKENDS}")
    t = time.monotonic()
    run(root.command(["/bin/sh", "-c", script]), log_to=root.log_file)
    took = time.monotonic() - t
    if not (root.path / "usr/local/bin" / COMMAND).is_file():
        raise CheckError(f"install.sh finished but there is no /usr/local/bin/{COMMAND} in the root")
    return took
