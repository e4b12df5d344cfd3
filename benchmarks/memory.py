"""What a device pays in memory, measured in fresh venvs that hold only the device install (the bundle's
edge_runtime wheel with numpy, Pillow and one backend, no TensorFlow), under build/device-venvs/.

- peak RSS: the high-water mark (VmHWM) of `edge-classify --model M photo.jpg`, start to exit;
- model memory: the RSS a process gains from loading the model and running its first inference (after
  numpy, Pillow and the backend library are imported), what the interpreter needs for the model itself,
  as LiteRT's `benchmark_model --report_peak_memory_footprint` and Edge Impulse's arena figures do;
- cold start (information): process start to the first answer.

The gate runs today's runtime on the release and the pinned runtime on the pinned release in the same
venv, in turns, so the ratio holds the libraries and the machine fixed.
"""
from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from . import reference
from .common import ROOT, BenchError, device_env, run_json

BACKENDS = {"tflite": "model_int8.tflite", "onnx": "model_int8.onnx"}   # venv → the model it is gated on
VENV_ROOT = ROOT / "build" / "device-venvs"

# Runs in the device venv. argv: the edge-classify script, or a folder holding an unpacked runtime
# (edge_runtime_ref/), then edge-classify's own arguments. VmHWM is the process's own high-water mark; a child's
# ru_maxrss is not (Linux carries the parent's across fork + exec, and the parent here is a TensorFlow-sized pytest).
_PEAK = r"""
import json, os, runpy, sys
target, args = sys.argv[1], sys.argv[2:]
code = 0
try:
    if os.path.isfile(target):
        sys.argv = [target, *args]
        runpy.run_path(target, run_name="__main__")
    else:
        sys.path.insert(0, target)
        from edge_runtime_ref.cli import main
        code = main(args)
except SystemExit as e:
    code = e.code or 0
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({"exit": code, "peak_rss_bytes": int(status["VmHWM"].split()[0]) * 1024,
                  "imports_tensorflow": "tensorflow" in sys.modules}))
"""

# argv: a folder holding an unpacked runtime (edge_runtime_ref/), or "" for the installed edge_runtime; the model.
_MODEL = r"""
import time
t0 = time.perf_counter()
import json, sys
def rss():
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    return int(status["VmRSS"].split()[0]) * 1024
target, model = sys.argv[1:3]
import numpy as np, PIL.Image
if target:
    sys.path.insert(0, target)
    from edge_runtime_ref.classifier import Classifier
else:
    from edge_runtime.classifier import Classifier
if model.endswith(".onnx"):
    import onnxruntime
else:
    try:
        import ai_edge_litert.interpreter
    except ModuleNotFoundError:
        import tflite_runtime.interpreter
t_import, before = time.perf_counter(), rss()
clf = Classifier(model, num_threads=1)
clf.scores(np.zeros((1, 28, 28), np.uint8))
t_first, after = time.perf_counter(), rss()
print(json.dumps({"model_rss_bytes": after - before, "import_s": t_import - t0, "cold_start_s": t_first - t0,
                  "imports_tensorflow": "tensorflow" in sys.modules}))
"""


def _package_digest() -> str:
    h = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    for name, data in reference.runtime_sources().items():
        h.update(name.encode() + data)
    return h.hexdigest()[:16]


def _pip(python: Path, *args: str, what: str) -> None:
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("WARNING: Location")]
        raise BenchError(f"{what}: pip failed: {(lines or ['no output'])[-1]}")


def device_venv(backend: str, log=print) -> Path:
    """The python of build/device-venvs/<backend>: the device wheel of `make bundle` (edge_runtime alone) installed
    with its <backend> extra, as the bundle's install.sh does. Made once; the wheel is reinstalled (without its
    dependencies) when the runtime's code changes."""
    from pipeline.bundle import tarball
    folder = VENV_ROOT / backend
    python = folder / "bin" / "python"
    deps_stamp, code_stamp = folder / ".extra", folder / ".package"
    fresh = not (python.exists() and deps_stamp.is_file() and deps_stamp.read_text() == backend)
    if not fresh and code_stamp.is_file() and code_stamp.read_text() == _package_digest():
        return python
    with tempfile.TemporaryDirectory(prefix="device-wheel-") as tmp:
        wheel = tarball.build_wheel(Path(tmp) / "dist", Path(tmp))
        if fresh:
            log(f"creating {folder}: the device wheel with its {backend} extra (no TensorFlow)")
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
            _pip(python, f"{wheel}[{backend}]", what=f"{folder}")
            deps_stamp.write_text(backend)
        else:
            _pip(python, "--no-deps", "--force-reinstall", str(wheel), what=f"{folder}")
    code_stamp.write_text(_package_digest())
    return python


def example_photo(folder: Path) -> Path:
    """The first real phone photo (real-photos-dev), or a 400×300 JPEG of a grey garment on a textured floor."""
    from .photo import dev_photos
    photos = dev_photos()
    if photos:
        return photos[0]
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(120, 200, (300, 400, 3), dtype=np.uint8))
    ImageDraw.Draw(img).polygon([(140, 40), (260, 40), (300, 110), (270, 120), (265, 260), (135, 260), (130, 120),
                                 (100, 110)], fill=(60, 60, 70))
    path = Path(folder) / "garment.jpg"
    img.save(path, quality=90)
    return path


def peak_rss(python: Path, runtime: Path | None, model: Path, photo: Path) -> dict:
    """VmHWM of one `edge-classify --model MODEL PHOTO`: the installed script (`runtime` None) or the CLI of an
    unpacked runtime."""
    target = runtime or python.parent / "edge-classify"
    r = run_json([str(python), "-c", _PEAK, str(target), "--model", str(model), str(photo)], device_env(),
                 f"edge-classify ({target}) in {python.parent.parent.name}", repository=False)
    if r["exit"] != 0:
        raise BenchError(f"edge-classify ({target}) --model {model} {photo} exited with {r['exit']}")
    return r


def model_memory(python: Path, runtime: Path | None, model: Path) -> dict:
    """RSS gained by loading `model` and running its first inference, and the cold start, in a fresh process
    of the installed runtime (`runtime` None) or an unpacked one."""
    return run_json([str(python), "-c", _MODEL, str(runtime or ""), str(model)], device_env(),
                    f"model memory of {model}", repository=False)


def _median(runs: list[dict]) -> dict:
    return {"peak_rss_bytes": int(np.median([r["peak_rss_bytes"] for r in runs if "peak_rss_bytes" in r])),
            "model_rss_bytes": int(np.median([r["model_rss_bytes"] for r in runs if "model_rss_bytes" in r])),
            "cold_start_s": float(np.median([r["cold_start_s"] for r in runs if "cold_start_s" in r])),
            "imports_tensorflow": any(r["imports_tensorflow"] for r in runs)}


def device_memory(release: Path, backends=tuple(BACKENDS), repeats: int = 3, pinned: Path = reference.REFERENCE_DIR,
                  log=print) -> dict:
    """Per backend venv, peak RSS of edge-classify on one photo, model memory and cold start of:
    - "installed": the installed `edge-classify` on the release's model (what a device pays);
    - "today" and "pinned": today's runtime on the release's model and the pinned runtime on the pinned model,
      both unpacked the same way and run in turns, `repeats` fresh processes each (medians): the gated ratios."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        tmp = Path(tmp)
        photo = example_photo(tmp)
        pinned_runtime = reference.extract_runtime(tmp / "pinned", pinned)
        today_runtime = tmp / "today"
        today_runtime.mkdir()
        with zipfile.ZipFile(io.BytesIO(reference.pack_runtime())) as z:
            z.extractall(today_runtime)
        for backend in backends:
            python = device_venv(backend, log)
            name = BACKENDS[backend]
            sides = {"installed": (None, Path(release) / name), "today": (today_runtime, Path(release) / name),
                     "pinned": (pinned_runtime, reference.path(name, pinned))}
            runs = {side: [] for side in sides}
            for _ in range(repeats):
                for side, (runtime, model) in sides.items():
                    runs[side] += [peak_rss(python, runtime, model, photo), model_memory(python, runtime, model)]
            med = {side: _median(r) for side, r in runs.items()}
            out[backend] = {"model": name, "photo": photo.name, "repeats": repeats, **med,
                            "peak_ratio": med["today"]["peak_rss_bytes"] / med["pinned"]["peak_rss_bytes"],
                            "model_ratio": med["today"]["model_rss_bytes"] / max(med["pinned"]["model_rss_bytes"], 1)}
    return out


def installed_figures(release: Path, names: list[str], repeats: int = 3, log=print) -> dict:
    """Information per artifact (the grayscale ones), each in the venv of its backend: the installed
    edge-classify's peak RSS on one photo, the model memory and the cold start (medians of `repeats`)."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        photo = example_photo(Path(tmp))
        for name in names:
            backend = "tflite" if name.endswith(".tflite") else "onnx"
            if name.endswith("_rgb.tflite"):
                continue
            python, model = device_venv(backend, log), Path(release) / name
            runs = []
            for _ in range(repeats):
                runs += [peak_rss(python, None, model, photo), model_memory(python, None, model)]
            out[name] = {"venv": backend, **_median(runs)}
    return out
