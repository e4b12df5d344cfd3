"""What every benchmark module shares: where things are, the release under test, fresh child processes."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
BASELINE = BENCH_DIR / "baseline.json"
# Every model file a release ships; each is gated against its pinned reference copy.
ARTIFACTS = ("model_float.tflite", "model_int8.tflite", "model_float.onnx", "model_int8.onnx",
             "model_int8_rgb.tflite")
MiB = 1024 * 1024

# Child processes that time numpy alone must not fan out: one BLAS/OpenMP thread.
ONE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class BenchError(RuntimeError):
    """A benchmark cannot run: the message says what is missing and how to get it."""


def exported_dir() -> Path:
    """The release under test: $FASHION_EDGE_EXPORTED, else exported/ in the repository."""
    return Path(os.environ.get("FASHION_EDGE_EXPORTED") or ROOT / "exported")


def load_manifest(folder: Path) -> dict:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise BenchError(f"{path}: no manifest; run `make export` (or point FASHION_EDGE_EXPORTED at a release)")
    return json.loads(path.read_text())


def release_artifacts(folder: Path) -> list[str]:
    """The ARTIFACTS the release in `folder` lists in its manifest, in ARTIFACTS order."""
    listed = {a["file"] for a in load_manifest(folder).get("artifacts", [])}
    return [n for n in ARTIFACTS if n in listed]


def device_env() -> dict:
    """The environment of a process that stands for a device: no TensorFlow switch, one BLAS thread."""
    return {**{k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}, **ONE_THREAD_ENV}


def run_json(cmd: list[str], env: dict, what: str, timeout: float = 1800, repository: bool = True) -> dict:
    """Run a child that prints one JSON line last; its parsed output (plus `process_s`), or BenchError.

    `repository`: put the repository on the child's path (last, so a package installed or put on PYTHONPATH
    wins, as in the parent); False for a device venv, which must run what is installed in it."""
    env = dict(env)
    if repository:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(ROOT)) if p)
    else:
        env.pop("PYTHONPATH", None)
    # The child runs in a neutral folder, so nothing is imported from the cwd.
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), timeout=timeout)
    wall = time.perf_counter() - t0
    lines = [line for line in p.stdout.strip().splitlines() if line.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = "\n".join(p.stderr.strip().splitlines()[-5:])
        raise BenchError(f"{what}: benchmark subprocess failed (exit {p.returncode}):\n{tail}")
    out = json.loads(lines[-1])
    out["process_s"] = wall
    return out


def write_json(path: Path, obj) -> None:
    """Write JSON through a temporary file and a rename: a killed run leaves the old file whole."""
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def cpu_kind() -> str:
    """What decides int8 speed: "avx512_vnni", "avx_vnni", "avx2", or the architecture. Information only:
    no gate depends on it (an AVX2-only EPYC ran int8 TFLite 1.53× slower than float, a VNNI EPYC 0.53×)."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        flags = []
    found = [f for f in ("amx_int8", "avx512_vnni", "avx_vnni", "avx2") if f in flags]
    return "+".join(found) if found else platform.machine()


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_kind": cpu_kind(), "cores": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "system": f"{platform.system()} {platform.release()}"}


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] bench: {msg}", file=sys.stderr, flush=True)


def show(path: Path) -> str:
    """A path relative to the repository when it is inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
