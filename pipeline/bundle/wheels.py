"""The device's third-party wheels, fetched for another machine: `pip download` for a target's platform tags.

Used by the offline bundle (`python -m pipeline bundle --with-wheels`) and by `make pi-check`. Versions are
this venv's where it has the package (the device then runs the code the release was validated with), else
the project's range.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError

# What each extra of the device package pulls in (pyproject.toml's ranges for those not installed here).
PACKAGES = {"numpy": None, "pillow": None, "ai-edge-litert": "2.3.*", "onnxruntime": "1.32.*",
            "opencv-python-headless": None, "pillow-heif": "1.8.*"}
EXTRA_PACKAGES = {"tflite": ["ai-edge-litert"], "onnx": ["onnxruntime"], "camera": ["opencv-python-headless"],
                  "heic": ["pillow-heif"]}
BASE_PACKAGES = ["numpy", "pillow"]


@dataclass(frozen=True)
class Target:
    """A device: CPU architecture, CPython version and glibc (manylinux tags up to it)."""

    machine: str        # aarch64 | x86_64
    python: str         # "3.11"
    glibc: str          # "2.36": Debian bookworm, the base of Raspberry Pi OS bookworm

    @property
    def name(self) -> str:
        return f"cp{self.python.replace('.', '')}-{self.machine}"

    def platform_args(self) -> list[str]:
        """pip --platform matches tags exactly: every manylinux tag up to this glibc. numpy 2.4 and Pillow 13
        publish manylinux_2_27/2_28 aarch64 wheels, onnxruntime 1.32 manylinux_2_28: manylinux2014 alone finds none."""
        major, minor = (int(x) for x in self.glibc.split(".")[:2])
        tags = [f"manylinux2014_{self.machine}"] + [f"manylinux_{major}_{m}_{self.machine}" for m in range(17, minor + 1)]
        return [arg for tag in tags for arg in ("--platform", tag)]


TARGETS = {
    "aarch64-cp311": Target("aarch64", "3.11", "2.36"),   # Raspberry Pi OS bookworm (64-bit)
    "x86_64-cp311": Target("x86_64", "3.11", "2.36"),     # Debian bookworm on a PC (and this machine's tests)
}


def host_versions(names=PACKAGES) -> dict[str, str]:
    """Versions of the device packages installed in this venv."""
    found = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def requirements(extras: list[str]) -> list[str]:
    """Pinned requirement lines for the base packages and those of `extras`."""
    names = BASE_PACKAGES + [p for extra in extras for p in EXTRA_PACKAGES[extra]]
    have = host_versions(names)
    return [f"{n}=={have[n]}" if n in have else (f"{n}=={PACKAGES[n]}" if PACKAGES[n] else n) for n in names]


def download(reqs: list[str], target: Target, dest: Path, log_to: Path | None = None) -> list[Path]:
    """`pip download` the wheels of `reqs` (and their dependencies) for `target` into `dest`; their paths."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", str(dest),
           "--only-binary=:all:", "--python-version", target.python, *target.platform_args(), *reqs]
    done = subprocess.run(cmd, text=True, capture_output=True)
    if log_to is not None:
        with log_to.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        tail = "\n".join(line for line in done.stderr.strip().splitlines() if not line.startswith("WARNING: Location"))
        raise PipelineError(f"pip download for {target.name} failed (exit {done.returncode}): {' '.join(reqs)}\n"
                            f"{tail[-2000:]}")
    return sorted(dest.glob("*.whl"))
