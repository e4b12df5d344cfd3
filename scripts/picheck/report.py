"""Reporting: the versions on both sides, the mismatch lines, the summary and build/pi-root/last-run.json."""

from __future__ import annotations

import json
import platform
from pathlib import Path

from pipeline.bundle.wheels import host_versions

from .common import log, run
from .install import VENV_PYTHON
from .root import Root

PACKAGES = ["numpy", "pillow", "ai-edge-litert", "onnxruntime"]


def guest_versions(root: Root) -> dict:
    """Python, machine and the runtime's packages as the installed venv in the root reports them."""
    code = ("import importlib.metadata as m, json, platform; print(json.dumps({'python': platform.python_version(), "
            "'machine': platform.machine(), **{n: m.version(n) for n in %r}}))" % PACKAGES)
    res = run(root.command([VENV_PYTHON, "-c", code]))
    return json.loads(res.stdout.strip().splitlines()[-1])


def host() -> dict:
    return {"python": platform.python_version(), **host_versions(PACKAGES)}


def log_versions(root: Root, guest: dict, here: dict) -> None:
    info = root.info()
    log(f"arm64 root: Debian {info['debian']} ({root.suite}), Python {guest['python']} "
        f"({guest['machine']}, glibc {info['libc']})")
    log("arm64, installed from the bundle: " + ", ".join(f"{n} {guest[n]}" for n in PACKAGES))
    log(f"x86 host: Python {here['python']}, " + ", ".join(f"{n} {here.get(n, '-')}" for n in PACKAGES))


def mismatches(model: str, cpu: str, names: list[str], truth: dict, x86: dict, arm: dict) -> list[str]:
    """One line per image whose top-1 differs between x86 and this emulated core."""
    return [f"MISMATCH {model} {n} (true class {truth[n]}): x86 {x86[n]['label']} ({x86[n]['index']}, "
            f"{float(x86[n]['score']):.4f}) != arm64 {cpu} {arm[n]['label']} ({arm[n]['index']}, {float(arm[n]['score']):.4f})"
            for n in names if (x86[n]["index"], x86[n]["label"]) != (arm[n]["index"], arm[n]["label"])]


def finish(cache: Path, report: dict, images: int, cpus: list[str], models: list[str]) -> int:
    """Write last-run.json, print the differences and the verdict; the exit code."""
    (cache / "last-run.json").write_text(json.dumps(report, indent=1) + "\n")
    diffs = report["differences"]
    for line in diffs:
        print(line, flush=True)
    state = "root built this run" if report["root_built_this_run"] else "cached root"
    log(f"wall time {report['wall_s']:.0f} s ({state}; setup and install {report['setup_s']:.0f} s); "
        f"report: {cache / 'last-run.json'}")
    if diffs:
        log(f"FAIL: {len(diffs)} top-1 answer(s) differ between x86 and emulated arm64")
        return 1
    log(f"OK: all {images} top-1 answers identical on x86 and arm64 ({', '.join(cpus)}) for {', '.join(models)}, "
        "through the edge-classify the offline bundle installed")
    return 0
