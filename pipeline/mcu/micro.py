"""A .tflite in TensorFlow Lite Micro's own interpreter (the `tflite-micro` wheel, the reference kernels an MCU
build starts from): its outputs, its agreement with LiteRT's built-in kernels, the smallest arena, the op list."""
from __future__ import annotations

import ctypes
import faulthandler
import os
import pickle
import signal
import re
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from pipeline.errors import PipelineError


class MicroUnsupportedError(PipelineError):
    """TFLite Micro cannot run the model (an op it lacks, or an op it has but not for these tensor types)."""

    exit_code = 2


@dataclass(frozen=True)
class Unsupported:
    """Why TFLite Micro refused a model: the op's name (None if its log named none) and its own log lines."""

    op: str | None
    log: str

    def sentence(self) -> str:
        if self.op:
            return f"TFLite Micro has no kernel for op {self.op}"
        return f"TFLite Micro could not prepare the model: {self.log.strip().splitlines()[-1] if self.log.strip() else 'no log'}"


class MicroCrashError(MicroUnsupportedError):
    """TFLite Micro's Python wrapper crashed the (forked) process that ran it."""


def isolated(fn, *args):
    """fn(*args) in a forked child, its value (or its exception) sent back through a pipe. TFLite Micro's Python
    wrapper can crash its process (SIGSEGV seen on arenas a little too small, and on a tutorial model's
    allocation); in a child, a crash is a MicroCrashError here instead of the end of the export."""
    read, write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:                                   # the child: never returns into the caller's code
        os.close(read)
        faulthandler.disable()                     # a crash here is reported once, by the parent
        try:
            try:
                data = pickle.dumps((True, fn(*args)))
            except Exception as e:  # noqa: BLE001 - sent to the parent, which raises it
                try:
                    data = pickle.dumps((False, e))
                except Exception:  # noqa: BLE001 - an exception that cannot be pickled is sent as text
                    data = pickle.dumps((False, PipelineError(f"{type(e).__name__}: {e}")))
            with os.fdopen(write, "wb") as f:
                f.write(data)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) or not data:
        how = signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
        raise MicroCrashError(f"TensorFlow Lite Micro's interpreter crashed ({how})")
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value


def version() -> str:
    """The installed tflite-micro's version; PipelineError naming the extra when it is missing."""
    from importlib.metadata import version as _v
    _runtime()
    return _v("tflite-micro")


def _runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ModuleNotFoundError as e:
        raise PipelineError(f"the MCU stage needs TensorFlow Lite Micro's interpreter ({e}): "
                            "pip install 'fashion-edge[mcu]'") from e
    return runtime


@contextmanager
def _c_output(path: str):
    """Send the C++ side's stdout and stderr (TFLM's MicroPrintf) to `path` for the duration."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        libc.fflush(None)   # C stdio buffers what it prints; flush before the descriptors go back
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def _quietly(fn):
    """(fn(), what the C++ side printed meanwhile)."""
    with tempfile.NamedTemporaryFile(prefix="tflm-", suffix=".log") as log:
        try:
            with _c_output(log.name):
                value = fn()
            error = None
        except RuntimeError as e:      # the wrapper's "TFLM failed to allocate tensors" and the like
            value, error = None, e
        text = open(log.name, encoding="utf-8", errors="replace").read()
    return value, error, text


# TFLM logs "Didn't find op for builtin opcode 'ATAN2'" for an op it has no kernel for. "Node CONV_2D (number 1)
# failed to prepare" means either a kernel that lacks these tensor types or simply an arena too small (measured on
# the release at 4,096 bytes), so it counts as "unsupported" only when it happens in a generous arena too.
_MISSING = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'|Failed to get registration from op code ([A-Z0-9_]+)")
_NODE = re.compile(r"Node ([A-Z0-9_]+) \(number \d+f?\) failed to (?:prepare|invoke)")

# The wrapper segfaults on arenas of a few hundred bytes (tail allocations of ~100-300 bytes failing; seen at 256),
# so no arena below this is tried; no real model needs less.
MIN_ARENA = 1024
GENEROUS_ARENA = 8 * 2**20


def _interpreter(model: bytes, arena_size: int):
    """(a TFLM interpreter with tensors allocated and one invoke done on zeros, or None; TFLM's log)."""
    runtime = _runtime()

    def make():
        it = runtime.Interpreter.from_bytes(bytes(model), arena_size=int(arena_size))
        d = it.get_input_details(0)
        it.set_input(np.zeros(tuple(d["shape"]), d["dtype"]), 0)
        it.invoke()
        return it

    it, error, log = _quietly(make)
    return it, log if it is not None else f"{log}\n{error}"


def unsupported(model: bytes) -> Unsupported | None:
    """Why TFLM cannot run the model in any arena (an op it lacks, named), or None if it runs."""
    try:
        ran, log = isolated(_runs, model, max(GENEROUS_ARENA, 10 * len(model)))
    except MicroCrashError as e:
        return Unsupported(None, str(e))
    if ran:
        return None
    m = _MISSING.search(log) or _NODE.search(log)
    return Unsupported(next(g for g in m.groups() if g) if m else None, log)


def _runs(model: bytes, arena_size: int) -> tuple[bool, str]:
    it, log = _interpreter(model, arena_size)
    return it is not None, log


def allocates(model: bytes, arena_size: int) -> bool:
    """Whether the model allocates and runs once in `arena_size` bytes; in a child process, so that a size
    the wrapper crashes on counts as too small."""
    if arena_size < MIN_ARENA:
        return False
    try:
        return isolated(_runs, model, arena_size)[0]
    except MicroCrashError:
        return False


def load(model: bytes, arena_size: int):
    """A TFLM interpreter for a model TFLM supports, with an arena of `arena_size` bytes, or None if it does not
    allocate (and run once) in that arena."""
    if arena_size < MIN_ARENA:
        return None
    return _interpreter(model, arena_size)[0]


def smallest_arena(model: bytes, granularity: int = 16) -> int:
    """The smallest arena (a multiple of `granularity` bytes, at least MIN_ARENA) with which a model TFLM supports
    allocates and runs once. Check `unsupported(model)` first."""
    hi = max(4096, len(model) // 2) // granularity * granularity
    while not allocates(model, hi):
        if hi > GENEROUS_ARENA:
            raise MicroUnsupportedError(f"the model does not allocate even in a {hi}-byte arena")
        hi *= 2
    lo = MIN_ARENA - granularity   # invariant: lo does not allocate (or is below the floor), hi does
    while hi - lo > granularity:
        mid = (lo + hi) // 2 // granularity * granularity
        if mid <= lo:
            break
        if not allocates(model, mid):
            lo = mid
        else:
            hi = mid
    return hi


_TOTAL = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
_RECORD = re.compile(r"'([^']+)' used (\d+) bytes with alignment overhead \(requested (\d+) bytes for (\d+)")


def arena_breakdown(model: bytes, arena_size: int) -> dict:
    """`_arena_breakdown` in a child process (see `isolated`)."""
    return isolated(_arena_breakdown, model, arena_size)


def _arena_breakdown(model: bytes, arena_size: int) -> dict:
    """The recording allocator's account of one allocated interpreter (TFLM prints it; parsed here):
    total = head (the planned, non-persistent tensor memory) + tail (persistent: structs, quantization, kernel data)."""
    it = load(model, arena_size)
    if it is None:
        raise MicroUnsupportedError(f"the model does not allocate in a {arena_size}-byte arena")
    _, _, log = _quietly(it.print_allocations)
    totals = {k: int(v) for k, v in _TOTAL.findall(log)}
    if set(totals) != {"total", "head", "tail"}:
        raise PipelineError(f"tflite-micro {version()}: unexpected print_allocations output: {log[:300]!r}")
    records = {name: {"bytes": int(used), "requested": int(req), "allocations": int(n)}
               for name, used, req, n in _RECORD.findall(log)}
    return {"total": totals["total"], "head": totals["head"], "tail": totals["tail"], "persistent": records}


def model_ops(model: bytes) -> dict[str, int]:
    """{op name: count} over all subgraphs, in order of first use; read from the flatbuffer itself, so an op
    TFLM lacks is named too."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    m = fb.Model.GetRootAsModel(bytearray(model), 0)
    counts: Counter[str] = Counter()
    for s in range(m.SubgraphsLength()):
        g = m.Subgraphs(s)
        for i in range(g.OperatorsLength()):
            code = m.OperatorCodes(g.Operators(i).OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            if builtin == fb.BuiltinOperator.CUSTOM:
                counts[f"CUSTOM:{code.CustomCode().decode()}"] += 1
            else:
                counts[names.get(builtin, f"BUILTIN_{builtin}")] += 1
    return dict(counts)


def int8_inputs(images_uint8: np.ndarray, mean: float, std: float, scale: float, zero_point: int) -> np.ndarray:
    """(N, 28, 28) uint8 → (N, 28, 28, 1) int8 exactly as edge_runtime makes a dataset image's input."""
    from edge_runtime.preprocess import normalize
    from edge_runtime.quant import quantize
    return quantize(normalize(images_uint8, mean, std), (scale, zero_point), np.int8)


def run(model: bytes, inputs: np.ndarray, arena_size: int) -> np.ndarray:
    """`run_timed` without the time."""
    return run_timed(model, inputs, arena_size)[0]


def run_timed(model: bytes, inputs: np.ndarray, arena_size: int) -> tuple[np.ndarray, float]:
    """`_run` in a child process (see `isolated`), and the CPU seconds it took there."""
    return isolated(_run_timed, model, inputs, arena_size)


def _run_timed(model: bytes, inputs: np.ndarray, arena_size: int) -> tuple[np.ndarray, float]:
    c0 = time.process_time()
    out = _run(model, inputs, arena_size)
    return out, time.process_time() - c0


def _run(model: bytes, inputs: np.ndarray, arena_size: int) -> np.ndarray:
    """The model's int8 outputs in TFLM, one image at a time (batch 1, as on a board): (N, classes)."""
    it = load(model, arena_size)
    if it is None:
        raise MicroUnsupportedError(f"the model does not run in TFLite Micro with a {arena_size}-byte arena")
    out = []
    for x in inputs:
        it.set_input(np.ascontiguousarray(x[None]), 0)
        it.invoke()
        out.append(np.array(it.get_output(0)).reshape(-1))
    return np.stack(out)


def reference_outputs(model: bytes, inputs: np.ndarray, chunk: int = 1000) -> np.ndarray:
    """The same inputs through LiteRT's built-in kernels (no XNNPACK delegate): (N, classes)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    it = Interpreter(model_content=bytes(model), num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    i_in, i_out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    out = []
    for start in range(0, len(inputs), chunk):
        batch = np.ascontiguousarray(inputs[start:start + chunk])
        it.resize_tensor_input(i_in, list(batch.shape), strict=False)
        it.allocate_tensors()
        it.set_tensor(i_in, batch)
        it.invoke()
        out.append(it.get_tensor(i_out).reshape(len(batch), -1))
    return np.concatenate(out)


def agreement(micro: np.ndarray, reference: np.ndarray, y: np.ndarray) -> dict:
    """TFLM against LiteRT's built-in kernels on the same int8 inputs."""
    top_m, top_r = micro.argmax(1), reference.argmax(1)
    return {"images": int(len(y)),
            "accuracy": round(float((top_m == y).mean()), 4),
            "reference_accuracy": round(float((top_r == y).mean()), 4),
            "correct": int((top_m == y).sum()),
            "reference_correct": int((top_r == y).sum()),
            "top1_agreement": round(float((top_m == top_r).mean()), 6),
            "top1_differ": int((top_m != top_r).sum()),
            "outputs_differ": int((micro != reference).any(axis=1).sum()),
            "max_abs_output_diff": int(np.abs(micro.astype(np.int16) - reference.astype(np.int16)).max(initial=0))}


def compare(model: bytes, inputs: np.ndarray, y: np.ndarray, arena_size: int) -> dict:
    """`agreement` plus the time TFLM took: wall seconds, and CPU milliseconds per image (the CPU figure holds on
    a loaded machine; the wall figure does not)."""
    t0 = time.perf_counter()
    micro, cpu = run_timed(model, inputs, arena_size)
    seconds = time.perf_counter() - t0
    result = agreement(micro, reference_outputs(model, inputs), y)
    result["tflm_seconds"] = round(seconds, 1)
    result["tflm_ms_per_image"] = round(1000 * cpu / max(1, len(inputs)), 2)
    return result
