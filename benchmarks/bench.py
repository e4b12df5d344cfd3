"""`make bench`: size, MACs, latency, throughput, cold start and peak RSS of every artifact in exported/;
the photo path (decode, cut-out, conversion, model) on real photos and the camera loop's frame rate.

One place for measuring: `make bench` (→ benchmarks/results.{json,md}), `make bench-baseline`
(→ benchmarks/baseline.json) and tests/test_regression.py all call these functions.

The machine is shared, so absolute times are noise: the figures that gates compare are ratios
measured in one run, with the models timed round-robin in blocks (load drift falls on all of them
alike) and summarized by medians. Everything runs on one thread.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import gzip
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
BASELINE = BENCH_DIR / "baseline.json"
ARTIFACTS = ("model_float.tflite", "model_int8.tflite", "model_float.onnx", "model_int8.onnx")
REFERENCE = "model_float.tflite"          # latency ratios are taken against this one
KERAS = "keras_float"                     # the row of the float Keras model
TOLERANCE = 1.3                           # a latency ratio may grow by this factor before a gate fails
MIN_KERAS_OVER_EDGE = 100                 # edge batch-1 must be this many times faster than Keras predict
BATCH = 64                                # throughput batch size
# Size budgets are policy; these seed a baseline that has none yet (the target for the int8
# model; the others get measured × 1.25, rounded up to 4 KiB).
DEFAULT_BUDGETS = {"model_int8.tflite": 64 * 1024}
MiB = 1024 * 1024

# Child processes that time numpy alone must not fan out: one BLAS/OpenMP thread.
ONE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TF_ENV = {"TF_USE_LEGACY_KERAS": "1", "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def exported_dir() -> Path:
    """The release under test: $FASHION_EDGE_EXPORTED, else exported/ in the repository."""
    return Path(os.environ.get("FASHION_EDGE_EXPORTED") or ROOT / "exported")


def load_manifest(folder: Path) -> dict:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest; run `make export` (or point FASHION_EDGE_EXPORTED at a release)")
    return json.loads(path.read_text())


def load_baseline(path: Path = BASELINE) -> dict:
    return json.loads(Path(path).read_text())


# --- size and MACs --------------------------------------------------------------------------------

def sizes(path: Path) -> dict:
    """File bytes and gzip -9 bytes (mtime 0, as the manifest counts them)."""
    raw = Path(path).read_bytes()
    return {"bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, 9, mtime=0))}


def macs(model) -> int:
    """Multiply-accumulates per image, counted from the Keras model's layers."""
    from pipeline import models
    return int(models.macs(model))


# --- the float Keras model ------------------------------------------------------------------------

def pin_tensorflow_threads() -> bool:
    """One intra-op and one inter-op thread; False if TensorFlow was already initialized (threads as they are)."""
    import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        return True
    except RuntimeError:
        return False


def _same_training(cached: dict, wanted: dict) -> bool:
    """Whether a build/ cache entry was made from the release's seed, data, training and pruning settings."""
    def key(c):
        data = {k: v for k, v in c.get("data", {}).items() if k not in ("data_dir", "test_limit")}
        return c.get("seed"), data, c.get("train"), c.get("prune")
    return key(cached) == key(wanted)


def build_dirs(manifest: dict, release: Path | None = None, build_dir: Path | None = None) -> list[Path]:
    """Where the release's cached Keras model may be: `build_dir` if given, else the manifest's build
    folder (a relative one beside the release folder, or in the repository) and build/."""
    if build_dir is not None:
        return [Path(build_dir)]
    recorded = Path(manifest.get("config", {}).get("build_dir") or "build")
    bases = [Path(release).resolve().parent] if release is not None else []
    dirs = [recorded] if recorded.is_absolute() else [base / recorded for base in [*bases, ROOT]]
    return list(dict.fromkeys(d.resolve() for d in [*dirs, ROOT / "build"]))


def load_keras(manifest: dict, release: Path | None = None, build_dir: Path | None = None):
    """(model, source): the release's pruned float model from build/prune-*/ if cached, else the same
    architecture with untrained weights (latency and MACs are the same; accuracy is not measured here)."""
    import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
    import tf_keras as keras
    from pipeline import models

    cfg = manifest.get("config", {})
    arch = cfg.get("train", {}).get("model", "compact")
    params = manifest.get("float_reference", {}).get("params")
    found = []  # (other configuration?, -mtime, path): this release's own model first, newest first
    for d in build_dirs(manifest, release, build_dir):
        for h5 in d.glob("prune-*/model.h5"):
            try:
                cached = json.loads((h5.parent / "config.json").read_text())
            except (OSError, ValueError):
                continue
            if cached.get("train", {}).get("model") == arch:
                found.append((not _same_training(cached, cfg), -h5.stat().st_mtime, h5))
    for other, _, h5 in sorted(found):
        model = keras.models.load_model(h5, compile=False)
        if params is not None and model.count_params() != params:
            continue
        how = "trained weights of another configuration, same architecture" if other else "this release's weights"
        return model, f"{_show(h5)} ({how})"
    return models.build(arch), (f"pipeline.models.build({arch!r}) with untrained weights: no build/prune-*/model.h5 "
                                "of this architecture; latency and MACs are the same as the trained model's")


def _show(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def keras_runner(model, mean: float, std: float, batch: np.ndarray) -> Callable[[], np.ndarray]:
    """`model.predict` on uint8 images, standardizing first, as the pipeline does."""
    def run():
        x = ((batch.astype(np.float32) / 255.0 - mean) / std)[..., None]
        return model.predict(x, batch_size=len(batch), verbose=0)
    return run


# --- the edge runtime -----------------------------------------------------------------------------

def edge_runner(path: Path, batch: np.ndarray, num_threads: int = 1) -> Callable[[], np.ndarray]:
    """`Classifier.scores` on uint8 images: normalize, quantize, invoke, dequantize (what a device pays)."""
    from edge_runtime.classifier import Classifier
    clf = Classifier(str(path), num_threads=num_threads)
    return lambda: clf.scores(batch)


def invoke_runner(path: Path, batch_size: int = 1, num_threads: int = 1) -> Callable[[], np.ndarray]:
    """The backend alone on an already-quantized NHWC batch: what the model itself costs."""
    from edge_runtime.backends import load_backend
    backend = load_backend(str(path), num_threads=num_threads)
    rng = np.random.default_rng(0)
    if np.issubdtype(backend.input_dtype, np.integer):
        info = np.iinfo(backend.input_dtype)
        x = rng.integers(info.min, info.max, (batch_size, 28, 28, 1), endpoint=True).astype(backend.input_dtype)
    else:
        x = rng.standard_normal((batch_size, 28, 28, 1)).astype(backend.input_dtype)
    return lambda: backend.run(x)


def sample_images(n: int, seed: int = 0) -> np.ndarray:
    """Random uint8 images: timing does not depend on the pixels (dense kernels, no early exit)."""
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


# --- timing ---------------------------------------------------------------------------------------

def interleaved(runners: dict[str, Callable[[], object]], calls: int | dict[str, int], rounds: int = 20,
                warmup: int = 10) -> dict[str, np.ndarray]:
    """Seconds per call of each runner as a (rounds, calls per round) array, timed round-robin: each
    round runs one block of every runner, in an order that rotates from round to round.

    `calls` is the total per runner (a dict gives each its own). Garbage collection is off while timing.
    """
    names = list(runners)
    total = calls if isinstance(calls, dict) else {n: calls for n in names}
    block = {n: max(1, math.ceil(total[n] / rounds)) for n in names}
    for name in names:
        for _ in range(warmup):
            runners[name]()
    times = {n: np.empty((rounds, block[n]), np.int64) for n in names}
    clock = time.perf_counter_ns
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                fn, out = runners[name], times[name][r]
                for i in range(block[name]):
                    t0 = clock()
                    fn()
                    out[i] = clock() - t0
    finally:
        if gc_was_enabled:
            gc.enable()
    return {n: t * 1e-9 for n, t in times.items()}


def summary(seconds: np.ndarray) -> dict:
    """Median, p99 and mean in milliseconds, and the number of calls."""
    return {"median_ms": float(np.median(seconds) * 1e3), "p99_ms": float(np.percentile(seconds, 99) * 1e3),
            "mean_ms": float(seconds.mean() * 1e3), "calls": int(seconds.size)}


def ratio(times: dict[str, np.ndarray], name: str, reference: str = REFERENCE) -> float:
    """Latency of `name` ÷ latency of `reference`: the median over rounds of the ratio of their block medians.

    Blocks of one round run back to back, so a burst of load on the shared machine that slows both cancels
    out, and one that hits a single block makes one outlying round, which the median over rounds ignores.
    """
    per_round = np.median(times[name], axis=1) / np.median(times[reference], axis=1)
    return float(np.median(per_round))


# --- compute floor --------------------------------------------------------------------------------

_GEMM = r"""
import json, sys, time
import numpy as np
n, repeats = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
c = np.empty((n, n), np.float32)
for _ in range(5):
    np.matmul(a, b, out=c)
t = []
for _ in range(repeats):
    t0 = time.perf_counter()
    np.matmul(a, b, out=c)
    t.append(time.perf_counter() - t0)
print(json.dumps({"n": n, "repeats": repeats, "median_s": float(np.median(t))}))
"""


def gemm_floor(sizes_: tuple[int, ...] = (256, 512), seconds_each: float = 1.0) -> dict:
    """Single-thread float32 GEMM throughput with numpy (OpenBLAS pinned to one thread, fresh process).

    The best size's median gives MAC/s; MACs ÷ that is what one image costs at GEMM speed on one core.
    """
    env = {**os.environ, **ONE_THREAD_ENV}
    runs = []
    for n in sizes_:
        # A quick probe sizes the run so each matrix size takes about `seconds_each`.
        probe = _run_json([sys.executable, "-c", _GEMM, str(n), "3"], env, f"GEMM {n}x{n}")
        repeats = max(20, int(seconds_each / max(probe["median_s"], 1e-6)))
        r = _run_json([sys.executable, "-c", _GEMM, str(n), str(repeats)], env, f"GEMM {n}x{n}")
        r["gflops"] = 2 * n ** 3 / r["median_s"] / 1e9
        runs.append(r)
    best = max(runs, key=lambda r: r["gflops"])
    return {"what": "float32 numpy matmul, one OpenBLAS thread, median per size; best size used",
            "runs": runs, "gflops": best["gflops"], "macs_per_s": best["gflops"] * 1e9 / 2, "n": best["n"]}


# --- cold start and peak RSS (fresh processes) ----------------------------------------------------

# Both cold-start scripts time from their first line, then report through _REPORT.
_EDGE_COLD = r"""
import time
t0 = time.perf_counter()
import json, resource, sys
import numpy as np
from edge_runtime.classifier import Classifier
t_import = time.perf_counter()
clf = Classifier(sys.argv[1], num_threads=1)
t_load = time.perf_counter()
clf.scores(np.zeros((1, 28, 28), np.uint8))
t_first = time.perf_counter()
clf.scores(np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8))
"""

_KERAS_COLD = r"""
import time
t0 = time.perf_counter()
import json, resource, sys
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
import tf_keras as keras
t_import = time.perf_counter()
model = keras.models.load_model(sys.argv[1], compile=False)
t_load = time.perf_counter()
mean, std = float(sys.argv[2]), float(sys.argv[3])
prep = lambda x: ((x.astype(np.float32) / 255.0 - mean) / std)[..., None]
model.predict(prep(np.zeros((1, 28, 28), np.uint8)), verbose=0)
t_first = time.perf_counter()
model.predict(prep(np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)), batch_size=64, verbose=0)
"""

_REPORT = r"""
def peak_rss():
    # VmHWM is this process's own high-water mark. ru_maxrss is not: Linux carries it across
    # fork + exec, so a child of the (TensorFlow-sized) benchmark process would report the parent's.
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

print(json.dumps({"import_s": t_import - t0, "load_s": t_load - t_import, "first_s": t_first - t_load,
                  "cold_start_s": t_first - t0, "peak_rss_bytes": peak_rss(),
                  "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "imports_tensorflow": "tensorflow" in sys.modules}))
"""


def _run_json(cmd: list[str], env: dict, what: str) -> dict:
    # The repository goes last on the path and the child runs in a neutral folder, so a package
    # installed or put on PYTHONPATH wins, as in the parent, and nothing is imported from the cwd.
    env = {**env, "PYTHONPATH": os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(ROOT)) if p)}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        tail = "\n".join(p.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{what}: benchmark subprocess failed (exit {p.returncode}):\n{tail}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def _median_runs(runs: list[dict]) -> dict:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {k: float(np.median([r[k] for r in runs])) for k in keys}
    for k in ("peak_rss_bytes", "ru_maxrss_bytes"):
        out[k] = int(max(r[k] for r in runs))
    out["imports_tensorflow"] = any(r["imports_tensorflow"] for r in runs)
    out["runs"] = len(runs)
    return out


def cold_start_edge(path: Path, repeats: int = 3) -> dict:
    """Import + load + first inference of the edge runtime in a fresh process (median of `repeats`), and
    the peak RSS (ru_maxrss) of that process after it also classified a batch of 64."""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    return _median_runs([_run_json([sys.executable, "-c", _EDGE_COLD + _REPORT, str(path)], env, f"cold start of {path}")
                         for _ in range(repeats)])


def cold_start_keras(h5: Path, mean: float, std: float, repeats: int = 3) -> dict:
    """The same for the float Keras model: TensorFlow import + load_model + first predict."""
    env = {**os.environ, **TF_ENV}
    return _median_runs([_run_json([sys.executable, "-c", _KERAS_COLD + _REPORT, str(h5), str(mean), str(std)], env,
                                   "cold start of the Keras model")
                         for _ in range(repeats)])


# --- the photo path and the camera loop -----------------------------------------------------------

PHOTO_MODEL = "model_int8.tflite"          # the release model users run on photos
PHOTO_RATIO = "photo_path_over_model_call"  # the gated figure: one photo ÷ one batch-1 model call
CAMERA_SIZE = (640, 480)


def one_thread_opencv() -> None:
    """OpenCV (video decode in the camera loop) on one thread too, when it is installed."""
    try:
        import cv2
    except ImportError:
        return
    cv2.setNumThreads(1)


def dev_photos() -> list[Path]:
    """The real phone photos (real-photos-dev: --photos, $FASHION_EDGE_PHOTOS or ../shared), or []."""
    from pipeline import photos
    folder = photos.find_dev_set()
    return photos.read_dev_set(folder)[0] if folder else []


def photo_path(model: Path, paths: list[Path], rounds: int = 5, model_calls: int = 400) -> dict:
    """Every photo through decode → cut-out → conversion → model (with its mirror image), timed per stage,
    `rounds` times; each round also times a block of batch-1 model calls on a 28×28 image, and the ratio
    (median photo ÷ median model call of the same round, median over rounds) is the gated figure."""
    from edge_runtime.classifier import Classifier
    from edge_runtime.timing import STAGES, classify_timed, model_call_seconds

    clf = Classifier(str(model), num_threads=1)
    for p in paths[:10]:
        classify_timed(clf, p)
    model_call_seconds(clf, 100)
    timed, calls, per_round = [], [], []
    for _ in range(rounds):
        block = model_call_seconds(clf, model_calls)
        these = [classify_timed(clf, p) for p in paths]
        per_round.append(float(np.median([t.total for t in these]) / np.median(block)))
        timed += these
        calls.append(block)
    calls = np.concatenate(calls)
    totals = np.array([t.total for t in timed])
    return {
        "model": model.name, "photos": len(paths), "rounds": rounds,
        "total": summary(totals),
        "stages": {s: summary(np.array([t.seconds[s] for t in timed])) for s in STAGES},
        "model_call_b1": summary(calls),
        PHOTO_RATIO: float(np.median(per_round)),
        "what": "per photo: load_image (JPEG draft decode) + to_model_input (cut-out, conversion) + "
                "Classifier.scores of the photo and its mirror + top-k; model call = Classifier.scores on one "
                "28×28 image; one thread everywhere",
    }


_PHOTO_CHILD = r"""
import json, sys
from pathlib import Path
from benchmarks import bench
bench.one_thread_opencv()
photos = bench.dev_photos()
model, rounds, frames = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print(json.dumps({"photo_path": bench.photo_path(model, photos, rounds),
                  "camera": bench.camera_fps(model, photos, frames) if frames else None}))
"""


def photo_path_fresh(model: Path, rounds: int = 5, camera_frames: int = 300) -> dict:
    """`photo_path` (and `camera_fps` unless `camera_frames` is 0) in a fresh process, as on a device: no
    TensorFlow loaded (its thread pools share the cores), one BLAS and OpenCV thread."""
    env = {**{k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}, **ONE_THREAD_ENV}
    r = _run_json([sys.executable, "-c", _PHOTO_CHILD, str(Path(model).resolve()), str(rounds), str(camera_frames)],
                  env, "photo path")
    r.pop("process_s", None)
    return r


def make_video(paths: list[Path], path: Path, frames: int, size: tuple[int, int] = CAMERA_SIZE) -> Path:
    """An MJPG .avi of `frames` frames at `size`: the photos in turn, each held for 3 frames (a camera
    pointed at one garment, then the next)."""
    import cv2
    from PIL import Image
    from edge_runtime.preprocess import load_image
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, size)
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write an MJPG video here")
    for i in range(frames):
        photo = load_image(paths[(i // 3) % len(paths)]).convert("RGB").resize(size, Image.Resampling.BILINEAR)
        writer.write(np.ascontiguousarray(np.asarray(photo)[..., ::-1]))
    writer.release()
    return path


def camera_fps(model: Path, paths: list[Path], frames: int = 300) -> dict:
    """Frames classified per second by the camera loop (`edge-classify --camera`) on a 640×480 video file
    made from the photos, one thread; and the median milliseconds per stage of its frames."""
    import io
    from edge_runtime.camera import run_camera
    from edge_runtime.classifier import Classifier

    clf = Classifier(str(model), num_threads=1)
    with tempfile.TemporaryDirectory(prefix="bench-camera-") as tmp:
        video = make_video(paths, Path(tmp) / "camera.avi", frames)
        err = io.StringIO()
        t0 = time.perf_counter()
        n = run_camera(clf, str(video), out=io.StringIO(), err=err)
        elapsed = time.perf_counter() - t0
    return {"frames": n, "seconds": elapsed, "fps": n / elapsed, "size": list(CAMERA_SIZE),
            "summary": err.getvalue().strip().splitlines()[-1]}


# --- the whole benchmark --------------------------------------------------------------------------

def cpu_kind() -> str:
    """What decides int8 speed, and so the ratios: "avx512_vnni", "avx_vnni", "avx2", or the architecture.
    On an AVX2-only EPYC int8 TFLite was ~1.5× slower than float; with AVX512-VNNI ~2× faster."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        flags = []
    return next((f for f in ("avx512_vnni", "avx_vnni", "avx2") if f in flags), platform.machine())


def for_cpu_kind(committed: dict, kind: str | None = None, what: str = "figure") -> tuple[float, str]:
    """A committed figure for this CPU kind, and where it comes from. A kind without its own figure gets the
    largest committed one, the loosest budget: which kind gives the highest ratio depends on the figure
    (int8 ÷ float is highest on AVX2, the photo path ÷ an int8 call on VNNI), and nothing is known of that CPU."""
    kind = kind or cpu_kind()
    if kind in committed:
        return float(committed[kind]), kind
    if not committed:
        raise KeyError(f"{BASELINE.name} has no {what}: run `make bench-baseline` on an idle machine")
    other = max(committed, key=committed.get)
    return float(committed[other]), f"{other} (none committed for {kind})"


def photo_ratio_budget(baseline: dict, kind: str | None = None) -> tuple[float, str]:
    """The committed photo-path ratio for this CPU kind and where it comes from (see `for_cpu_kind`)."""
    return for_cpu_kind(baseline.get(PHOTO_RATIO) or {}, kind, PHOTO_RATIO)


def latency_ratio_budget(baseline: dict, name: str, kind: str | None = None) -> tuple[float, str]:
    """The committed batch-1 latency ratio of `name` ÷ model_float.tflite for this CPU kind: int8 is ~1.5×
    slower than float on an AVX2-only EPYC and ~2× faster with AVX512-VNNI, so one figure cannot gate both."""
    return for_cpu_kind(baseline["artifacts"][name]["latency_ratio_vs_float_tflite"], kind,
                        f"latency_ratio_vs_float_tflite for {name}")


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
            "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}"}


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] bench: {msg}", file=sys.stderr, flush=True)


def measure(folder: Path, *, build_dir: Path | None = None, calls: int = 2000, keras_calls: int = 1000,
            batch_calls: int = 200, keras_batch_calls: int = 60, rounds: int = 20, cold_repeats: int = 3,
            photo_rounds: int = 5) -> dict:
    """Every figure of `make bench` for the release in `folder`, in one run."""
    t_start = time.perf_counter()
    folder = Path(folder)
    manifest = load_manifest(folder)
    norm = manifest["input"]["normalization"]
    mean, std = float(norm["mean"]), float(norm["std"])
    entries = {a["file"]: a for a in manifest["artifacts"]}
    names = [n for n in ARTIFACTS if n in entries]

    _progress("compute floor: single-thread float32 GEMM")
    floor = gemm_floor()

    _progress("loading the float Keras model")
    threads_pinned = pin_tensorflow_threads()
    model, keras_source = load_keras(manifest, folder, build_dir)
    n_macs = macs(model)
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    h5 = tmp / "keras_float.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "HDF5 is legacy": it is the pipeline's cache format
        model.save(h5, include_optimizer=False)

    rows = {}
    for name in names:
        e = entries[name]
        rows[name] = {"format": e["format"], "precision": e["precision"], **sizes(folder / name), "macs": n_macs}
    rows[KERAS] = {"format": "keras h5", "precision": "float32", **sizes(h5), "macs": n_macs}

    one, many = sample_images(1), sample_images(BATCH, seed=1)
    _progress(f"batch-1 latency: {len(names)} artifacts × {calls} calls, Keras predict × {keras_calls}, "
              f"{rounds} interleaved rounds")
    b1 = {n: edge_runner(folder / n, one) for n in names}
    b1[KERAS] = keras_runner(model, mean, std, one)
    lat = interleaved(b1, {**{n: calls for n in names}, KERAS: keras_calls}, rounds)
    inv = interleaved({n: invoke_runner(folder / n) for n in names}, calls, rounds)

    _progress(f"batch-{BATCH} throughput")
    b64 = {n: edge_runner(folder / n, many) for n in names}
    b64[KERAS] = keras_runner(model, mean, std, many)
    thr = interleaved(b64, {**{n: batch_calls for n in names}, KERAS: keras_batch_calls}, rounds, warmup=3)

    medians = {n: float(np.median(t)) for n, t in lat.items()}
    floor_s = n_macs / floor["macs_per_s"]
    for n, row in rows.items():
        row["latency_b1"] = summary(lat[n])
        if n in inv:
            row["invoke_b1"] = summary(inv[n])
        row["ratio_vs_float_tflite"] = ratio(lat, n)
        row["x_compute_floor"] = medians[n] / floor_s
        row["throughput_b64_ips"] = BATCH / float(np.median(thr[n]))

    _progress(f"cold start and peak RSS: fresh processes × {cold_repeats} per model")
    for n in names:
        rows[n]["cold"] = cold_start_edge(folder / n, cold_repeats)
    rows[KERAS]["cold"] = cold_start_keras(h5, mean, std, cold_repeats)
    h5.unlink()
    tmp.rmdir()

    photos_found = dev_photos()
    photo, camera = None, None
    if photos_found and PHOTO_MODEL in names:
        _progress(f"photo path: {len(photos_found)} real photos × {photo_rounds} rounds, {PHOTO_MODEL}, and the camera "
                  "loop on a 640×480 video file made from them, in a fresh process")
        fresh = photo_path_fresh(folder / PHOTO_MODEL, photo_rounds)
        photo, camera = fresh["photo_path"], fresh["camera"]
    else:
        _progress("photo path: no real-photos-dev folder ($FASHION_EDGE_PHOTOS) or no int8 TFLite model: skipped")

    info = {}
    for fmt in ("tflite", "onnx"):
        f, i = f"model_float.{fmt}", f"model_int8.{fmt}"
        if f in medians and i in medians:
            info[f"int8_over_float_{fmt}"] = ratio(lat, i, f)
    info["keras_predict_over_edge"] = {n: ratio(lat, KERAS, n) for n in names}
    return {
        "schema": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": _git_commit(),
        "machine": machine(),
        "exported": str(folder),
        "manifest": {"created": manifest.get("created"), "git_commit": manifest.get("git_commit"),
                     "macs": manifest.get("float_reference", {}).get("macs")},
        "settings": {"threads": 1, "tensorflow_threads_pinned": threads_pinned, "rounds": rounds,
                     "calls_b1": calls, "keras_calls_b1": keras_calls, "batch": BATCH,
                     "calls_batch": batch_calls, "keras_calls_batch": keras_batch_calls, "cold_repeats": cold_repeats,
                     "latency": "edge: Classifier.scores on 1 uint8 image (normalize, quantize, invoke, "
                                "dequantize); Keras: model.predict on 1 standardized image"},
        "keras_source": keras_source,
        "compute_floor": {**floor, "floor_ms_per_image": floor_s * 1e3},
        "models": rows,
        "ratios": info,
        "photo_path": photo,
        "camera": camera,
        "wall_s": time.perf_counter() - t_start,
    }


# --- output ---------------------------------------------------------------------------------------

def _kib(b: int) -> str:
    return f"{b / 1024:,.1f} KiB"


def markdown(results: dict) -> str:
    """The results as a markdown table plus the figures it is read against."""
    f = results["compute_floor"]
    lines = [
        "# Benchmark",
        "",
        f"{results['created']}, commit {results['git_commit']}, release `{results['exported']}` "
        f"(manifest {results['manifest']['created']}), {results['machine']['cpu']} "
        f"({results['machine']['cores']} cores, shared: read the ratios, not the absolute times). One thread.",
        "",
        "| model | bytes | gzip | MACs/img | b1 median | b1 p99 | b1 invoke | b1 ÷ float TFLite | × compute floor "
        "| b64 img/s | cold start | peak RSS |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, r in results["models"].items():
        lat, cold = r["latency_b1"], r["cold"]
        invoke = f"{r['invoke_b1']['median_ms']:.3f} ms" if "invoke_b1" in r else "–"
        lines.append(
            f"| {name} | {r['bytes']:,} | {r['gzip_bytes']:,} | {r['macs'] / 1e6:.2f} M | {lat['median_ms']:.3f} ms "
            f"| {lat['p99_ms']:.3f} ms | {invoke} | {r['ratio_vs_float_tflite']:.2f} | {r['x_compute_floor']:.1f} "
            f"| {r['throughput_b64_ips']:,.0f} | {cold['cold_start_s']:.2f} s | {cold['peak_rss_bytes'] / MiB:.0f} MiB |")
    ratios = results["ratios"]
    keras_over = ", ".join(f"{n} {v:,.0f}×" for n, v in ratios["keras_predict_over_edge"].items())
    lines += [
        "",
        f"- **Compute floor**: {f['gflops']:.1f} GFLOP/s = {f['macs_per_s'] / 1e9:.1f} GMAC/s "
        f"({f['n']}×{f['n']} float32 numpy matmul, one OpenBLAS thread, median); "
        f"{results['models'][KERAS]['macs']:,} MACs ÷ that = {f['floor_ms_per_image']:.3f} ms per image. "
        "“× compute floor” is the batch-1 median divided by it.",
        "- **int8 ÷ float** (batch-1 median): " + ", ".join(
            f"{k.removeprefix('int8_over_float_')} {v:.2f}" for k, v in ratios.items() if k.startswith("int8_")),
        f"- **Keras predict ÷ edge runtime** (batch-1): {keras_over}.",
        f"- **Keras model**: {results['keras_source']}.",
        "- b1 = one image through `Classifier.scores` (normalize, quantize, invoke, dequantize) or Keras "
        "`model.predict`; b1 invoke = the backend alone on a quantized tensor; b64 = batches of 64. "
        f"{results['settings']['calls_b1']:,} edge / {results['settings']['keras_calls_b1']:,} Keras calls, "
        f"round-robin in {results['settings']['rounds']} rounds.",
        "- cold start = import + load + first inference in a fresh process (median of "
        f"{results['settings']['cold_repeats']}; Keras includes importing TensorFlow); peak RSS = that process's "
        f"high-water mark (VmHWM, i.e. its own ru_maxrss) after it also classified {BATCH} images. "
        + ("The edge processes never imported TensorFlow." if not any(
            r["cold"]["imports_tensorflow"] for n, r in results["models"].items() if n != KERAS)
           else "**Warning: an edge process imported TensorFlow.**"),
        f"- Whole run: {results['wall_s']:.0f} s.",
        "",
    ]
    return "\n".join(lines + photo_markdown(results))


def photo_markdown(results: dict) -> list[str]:
    """The photo path split by stage, as a profiler would, and the camera loop's frame rate."""
    p, cam = results.get("photo_path"), results.get("camera")
    if not p:
        return ["## Photo path", "", "Not measured: no real-photos-dev folder here ($FASHION_EDGE_PHOTOS).", ""]
    total = p["total"]["median_ms"]
    lines = ["## Photo path", "",
             f"`{p['model']}` on {p['photos']} real phone photos (real-photos-dev) × {p['rounds']} rounds, one thread "
             f"(OpenCV too): **{p[PHOTO_RATIO]:.1f}× a batch-1 model call** "
             f"({total:.3f} ms per photo ÷ {p['model_call_b1']['median_ms']:.4f} ms; median per round).", "",
             "| stage | median | p99 | share of the median photo |", "|---|--:|--:|--:|"]
    what = {"decode": "decode (JPEG draft)", "cutout": "cut-out (garment mask)",
            "conversion": "rest of the conversion", "model": "model (photo + mirror) + top-k"}
    for stage, r in p["stages"].items():
        lines.append(f"| {what.get(stage, stage)} | {r['median_ms']:.3f} ms | {r['p99_ms']:.3f} ms | "
                     f"{r['median_ms'] / total:.0%} |")
    lines.append(f"| **whole photo** | **{total:.3f} ms** | **{p['total']['p99_ms']:.3f} ms** | |")
    if cam:
        lines += ["", f"Camera loop (`edge-classify --camera`) on a {cam['size'][0]}×{cam['size'][1]} MJPG video made "
                      f"from the photos: **{cam['fps']:.0f} frames classified per second** ({cam['frames']} frames in "
                      f"{cam['seconds']:.2f} s). Its own summary: `{cam['summary']}`"]
    return lines + [""]


def make_baseline(results: dict, previous: dict | None = None) -> dict:
    """A baseline from a fresh measurement. Size budgets are policy, kept from `previous` (set to
    measured × 1.25 rounded up to 4 KiB where missing); a release over a budget is refused."""
    previous = previous or {}
    old = previous.get("artifacts", {})
    kind = results["machine"]["cpu_kind"]
    artifacts, over = {}, []
    for name in ARTIFACTS:
        r = results["models"].get(name)
        if r is None:
            continue
        budget = (old.get(name, {}).get("max_bytes") or DEFAULT_BUDGETS.get(name)
                  or 4096 * math.ceil(r["bytes"] * 1.25 / 4096))
        if r["bytes"] > budget:
            over.append(f"{name} size {r['bytes']} B > budget {budget} B")
        artifacts[name] = {"max_bytes": int(budget), "latency_ratio_vs_float_tflite": {
            **old.get(name, {}).get("latency_ratio_vs_float_tflite", {}), kind: round(r["ratio_vs_float_tflite"], 3)}}
    if over:
        raise SystemExit("baseline not written: " + "; ".join(over) + f". If the growth is intended, raise "
                         f"max_bytes by hand in {BASELINE.relative_to(ROOT)} and say why in the commit.")
    photo = {kind: round(results["photo_path"][PHOTO_RATIO], 2)} if results.get("photo_path") else {}
    return {
        "schema": 2,
        "what": "Committed reference figures for tests/test_regression.py: size budgets (policy, edited by hand) "
                "and, per CPU kind, batch-1 latency ratios vs model_float.tflite and the photo-path ratio "
                "(measured by `make bench-baseline`).",
        "update": "Run `make bench-baseline` on an idle machine after an intended change, review the diff of this "
                  "file, and commit it with the reason. It rewrites the figures of this machine's CPU kind and "
                  "keeps the other kinds'. Budgets are never raised by the tool.",
        # Per CPU kind (see cpu_kind): this run's kind is replaced, the others are kept.
        "measured": {**previous.get("measured", {}),
                     kind: {"created": results["created"], "git_commit": results["git_commit"],
                            "machine": results["machine"], "release": results["manifest"]}},
        "latency_tolerance": previous.get("latency_tolerance", TOLERANCE),
        "min_keras_over_edge": previous.get("min_keras_over_edge", MIN_KERAS_OVER_EDGE),
        "manifest_size_tolerance": previous.get("manifest_size_tolerance", 1.05),
        "real_photos_min_top1": previous.get("real_photos_min_top1", 0.5),
        "artifacts": artifacts,
        PHOTO_RATIO: {**previous.get(PHOTO_RATIO, {}), **photo},
        "info": {**previous.get("info", {}), kind: {
            **{k: round(v, 3) for k, v in results["ratios"].items() if k.startswith("int8_")},
            "keras_predict_over_edge": {k: round(v) for k, v in results["ratios"]["keras_predict_over_edge"].items()},
            "x_compute_floor": {k: round(r["x_compute_floor"], 1) for k, r in results["models"].items()},
            "compute_floor_gflops": round(results["compute_floor"]["gflops"], 1),
        }},
    }


def write_json(path: Path, obj) -> None:
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    p.add_argument("--exported", type=Path, default=None,
                   help="release folder (default: $FASHION_EDGE_EXPORTED, else exported/)")
    p.add_argument("--build-dir", type=Path, default=None,
                   help="where to look for the cached Keras model (default: the manifest's build dir, and build/)")
    p.add_argument("--out-dir", type=Path, default=BENCH_DIR, help="where results.{json,md} go")
    p.add_argument("--calls", type=int, default=2000, help="batch-1 calls per edge artifact (default 2000)")
    p.add_argument("--keras-calls", type=int, default=1000, help="batch-1 Keras predict calls (default 1000)")
    p.add_argument("--rounds", type=int, default=20, help="interleaved rounds (default 20)")
    p.add_argument("--cold-repeats", type=int, default=3, help="fresh processes per model (default 3)")
    p.add_argument("--photo-rounds", type=int, default=5,
                   help="passes over the real photos for the photo path (default 5)")
    p.add_argument("--write-baseline", action="store_true",
                   help=f"also rewrite {BASELINE.relative_to(ROOT)} from this run (budgets are kept)")
    args = p.parse_args(argv)

    folder = args.exported or exported_dir()
    try:
        results = measure(folder, build_dir=args.build_dir, calls=args.calls, keras_calls=args.keras_calls,
                          rounds=args.rounds, cold_repeats=args.cold_repeats, photo_rounds=args.photo_rounds)
    except (FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.out_dir / "results.json", results)
    table = markdown(results)
    (args.out_dir / "results.md").write_text(table)
    print(table)
    print(f"wrote {args.out_dir / 'results.json'} and {args.out_dir / 'results.md'}", file=sys.stderr)
    if args.write_baseline:
        previous = load_baseline() if BASELINE.exists() else None
        write_json(BASELINE, make_baseline(results, previous))
        print(f"wrote {BASELINE}: review `git diff {BASELINE.relative_to(ROOT)}` and commit it on purpose",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
