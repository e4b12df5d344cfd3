"""Raspberry Pi proof: the offline device bundle, installed on an emulated arm64 Debian bookworm, gives the x86 answers.

Runs scripts/pi_check.py (the same check as `make pi-check`): a cached arm64 root under build/pi-root
(built on first use: debootstrap + qemu-user-static, about 3 minutes), the offline bundle of the release
(`make bundle-offline`: the edge_runtime wheel and the aarch64 wheels) installed in it by its install.sh with
no network, then the installed `edge-classify` on a photo and on 200 test PNGs with
model_int8.{tflite,onnx}, emulated as a Cortex-A72 (Pi 4) and a Cortex-A76 (Pi 5).

Skipped only when this machine cannot run qemu/debootstrap at all (not root, no apt-get to install them,
no namespaces or binfmt_misc for them, not x86-64); an uncached root is built, not skipped.
PI_CHECK_MODEL_DIR points it at another model folder (default: exported/).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "pi_check.py"
EXIT_UNAVAILABLE = 77


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)


@pytest.mark.pi
def test_arm64_answers_match_x86():
    pre = _run("--preflight", timeout=900)  # may apt-get install debootstrap and qemu-user-static
    if pre.returncode == EXIT_UNAVAILABLE:
        reason = [line for line in pre.stdout.splitlines() if "UNAVAILABLE" in line]
        pytest.skip((reason or [pre.stdout.strip()])[-1])
    assert pre.returncode == 0, pre.stdout

    model_dir = os.environ.get("PI_CHECK_MODEL_DIR", str(REPO / "exported"))
    res = _run(model_dir, "--no-timing", timeout=3600)  # the latency figures are for `make pi-check`
    print(res.stdout)
    assert res.returncode == 0, f"pi-check failed (exit {res.returncode}):\n{res.stdout[-6000:]}"
    assert "OK: all 200 top-1 answers identical" in res.stdout, res.stdout[-3000:]
    assert "network inside the root: only lo" in res.stdout and "installed with the bundle's install.sh" in res.stdout
    assert "photo: `edge-classify /opt/pi-check/photo_" in res.stdout
