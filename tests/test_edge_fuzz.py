"""Device-side fuzzing: the release's model files, broken on purpose, through `python -m edge_runtime --model MUTATED
--no-verify IMAGE` under a time and a memory limit. Every case must end with an answer (exit 0) or the CLI's error
exit with one line naming the file; never a traceback, a signal or a hang.

Seeded mutations of exported/model_int8.tflite and exported/model_int8.onnx: truncation at many points, flipped
bytes, zeroed ranges, and huge values written into the flatbuffer's vector lengths, offsets and indices and into
the protobuf's length prefixes and varints (both formats are walked here to find those fields). FUZZ_CASES=N runs
N cases instead of the default; FUZZ_SEED=S another seed.

Cases run in batches, a child process per batch (one start-up of Python and the runtimes for many cases): the
child calls the CLI's `main` per case with its stdout and stderr file descriptors redirected (the runtimes' C++
logs included) and reports each outcome as it ends. When a child dies or hangs, the case it was on is run again
alone as the real command, and that verdict counts; so does the real command's for every case the batch did not
find clean.
"""

from __future__ import annotations

import json
import os
import random
import resource
import struct
import subprocess
import sys
import textwrap
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

try:
    from edge_models import EXPORTED, REPO
except ImportError:  # tests/ collected as a package
    from tests.edge_models import EXPORTED, REPO

CASES = int(os.environ.get("FUZZ_CASES", "300"))
SEED = int(os.environ.get("FUZZ_SEED", "29"))
MEMORY_LIMIT = 1 << 30          # bytes of address space per child: a Raspberry Pi's RAM; the CLI needs ~0.2 GB
CASE_TIME_LIMIT_S = 20.0        # one model file, loaded and run once, takes ~0.05 s
BATCH = 25
ERROR_EXIT = 2                  # edge_runtime.cli: "the model ... is unusable"
# LiteRT's own start-up notice, printed to fd 2 by its C++ logger on every load (also with a good model).
RUNTIME_NOTICES = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)
WARNING = "edge_runtime: warning: "     # e.g. no metadata: the assumed normalization (a line before the error)

# The child: run the CLI's main on each model in turn; one JSON line per case on the saved stdout.
CHILD = textwrap.dedent("""
    import json, os, sys, tempfile, traceback
    from edge_runtime import classifier
    from edge_runtime.cli import main
    image, models = sys.argv[1], sys.argv[2:]
    report = os.fdopen(os.dup(1), "w")
    for model in models:
        classifier._warned.clear()           # as in a fresh process: each case's warnings are printed
        with tempfile.TemporaryFile() as err, open(os.devnull, "wb") as out:
            sys.stdout.flush(); sys.stderr.flush()
            saved = os.dup(1), os.dup(2)
            os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
            try:
                rc = main(["--model", model, "--no-verify", image])
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 1
            except BaseException:
                traceback.print_exc()
                rc = 1
            sys.stdout.flush(); sys.stderr.flush()
            os.dup2(saved[0], 1); os.dup2(saved[1], 2)
            os.close(saved[0]); os.close(saved[1])
            err.seek(0)
            text = err.read().decode("utf-8", "replace")
        report.write(json.dumps({"model": model, "rc": rc, "stderr": text}) + "\\n")
        report.flush()
""")


# --- where the length fields are ----------------------------------------------------------------------

def _u32(buf: bytes, at: int) -> int:
    return struct.unpack_from("<I", buf, at)[0]


def _flatbuffer_fields(buf: bytes) -> dict[str, list[int]]:
    """Byte positions of the TFLite schema's vector lengths, uoffsets and int32 scalars (shapes, indices) in
    a .tflite file: Model → subgraphs → tensors (shape, buffer, quantization) and operators (inputs,
    outputs, opcode), operator_codes, buffers (data, offset, size), metadata."""
    found: dict[str, list[int]] = {"length": [], "offset": [], "scalar": []}

    def field(table: int, slot: int) -> int | None:
        vtable = table - struct.unpack_from("<i", buf, table)[0]
        vsize = struct.unpack_from("<H", buf, vtable)[0]
        if 4 + 2 * slot >= vsize:
            return None
        off = struct.unpack_from("<H", buf, vtable + 4 + 2 * slot)[0]
        return table + off if off else None

    def target(table: int, slot: int) -> int | None:
        at = field(table, slot)
        if at is None:
            return None
        found["offset"].append(at)
        return at + _u32(buf, at)

    def vector(table: int, slot: int) -> list[int]:
        start = target(table, slot)
        if start is None:
            return []
        found["length"].append(start)
        return [start + 4 + 4 * i for i in range(_u32(buf, start))]

    def tables(table: int, slot: int) -> list[int]:
        items = vector(table, slot)
        found["offset"] += items
        return [at + _u32(buf, at) for at in items]

    def scalar(table: int, slot: int) -> None:
        at = field(table, slot)
        if at is not None:
            found["scalar"].append(at)

    model = _u32(buf, 0)
    found["offset"].append(0)
    for subgraph in tables(model, 2):
        for tensor in tables(subgraph, 0):
            found["scalar"] += vector(tensor, 0) + vector(tensor, 7)     # shape, shape_signature
            scalar(tensor, 2)                                            # buffer index
            quant = target(tensor, 4)
            if quant is not None:
                for slot in range(4):                                    # min, max, scale, zero_point
                    vector(quant, slot)
        found["scalar"] += vector(subgraph, 1) + vector(subgraph, 2)     # input and output tensor indices
        for op in tables(subgraph, 3):
            scalar(op, 0)                                                # opcode index
            found["scalar"] += vector(op, 1) + vector(op, 2)
    for code in tables(model, 1):
        scalar(code, 0)
        scalar(code, 3)                                                  # builtin_code
    for buffer in tables(model, 4):
        vector(buffer, 0)
        scalar(buffer, 1)
        scalar(buffer, 2)                                                # offset, size (models over 2 GB)
    for entry in tables(model, 6):
        scalar(entry, 1)                                                 # metadata buffer index
    return found


def _varint(buf: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        b = buf[at]
        value |= (b & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not b & 0x80:
            return value, at


def _protobuf_fields(buf: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> dict[str, list]:
    """(start, end) of every length prefix and varint in a protobuf message, descending into each
    length-delimited field that parses as a message itself (ONNX's graph, nodes, tensors, shapes …)."""
    end = len(buf) if end is None else end
    found: dict[str, list] = {"length": [], "varint": []}
    at = start
    while at < end:
        key, at = _varint(buf, at)
        wire = key & 7
        if key >> 3 == 0:
            raise ValueError("field number 0")
        if wire == 0:
            _, after = _varint(buf, at)
            found["varint"].append((at, after))
            at = after
        elif wire == 2:
            n, body = _varint(buf, at)
            if body + n > end:
                raise ValueError("length past the end")
            found["length"].append((at, body))
            if depth < 12 and n:
                try:
                    inner = _protobuf_fields(buf, body, body + n, depth + 1)
                except ValueError:
                    inner = None                                         # bytes or a string
                if inner is not None:
                    for kind in found:
                        found[kind] += inner[kind]
            at = body + n
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire}")
    if at != end:
        raise ValueError("overran")
    return found


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        out.append(b | (0x80 if value else 0))
        if not value:
            return bytes(out)


# --- the mutations ------------------------------------------------------------------------------------

HUGE_U32 = (0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x40000000, 0x10000000, 0xFFFFFFFE)
HUGE_VARINT = ((1 << 64) - 1, (1 << 63) - 1, 1 << 62, 0xFFFFFFFF, 0x7FFFFFFF, 1 << 40, 1 << 31)


def mutations(data: bytes, fmt: str, n: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """`n` seeded mutations of one model file: (what was done, the bytes)."""
    size = len(data)
    fields = _flatbuffer_fields(data) if fmt == "tflite" else _protobuf_fields(data)
    kinds = (["truncate"] * 5 + ["flip"] * 5 + ["zero"] * 3 + ["huge-length"] * 4 + ["huge-field"] * 3
             + ["small-field"] * 3)
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        b = bytearray(data)
        if kind == "truncate":
            # evenly over the file (the header, the tables, the weights, the metadata) and near its start
            at = (i * 7919) % size if rng.random() < 0.7 else rng.randrange(0, 64)
            what, b = f"truncated to {at} bytes", b[:at]
        elif kind == "flip":
            spots = [rng.randrange(size) for _ in range(rng.choice((1, 1, 2, 4, 16)))]
            for at in spots:
                b[at] ^= rng.randrange(1, 256)
            what = f"flipped bytes at {spots[:4]}{' …' if len(spots) > 4 else ''}"
        elif kind == "zero":
            start, length = rng.randrange(size), rng.choice((4, 16, 64, 256, 4096))
            b[start : start + length] = bytes(len(b[start : start + length]))
            what = f"zeroed {length} bytes at {start}"
        elif kind == "small-field":
            # another plausible value: a tensor, buffer or operator index that exists, a shape that fits
            if fmt == "tflite":
                at = rng.choice(fields["scalar"])
                value = rng.randrange(-1, 40)
                struct.pack_into("<i", b, at, value)
            else:
                start, after = rng.choice(fields["varint"])
                value = rng.randrange(0, 40)
                b[start:after] = _encode_varint(value)
            what = f"{'scalar' if fmt == 'tflite' else 'varint'} at {at if fmt == 'tflite' else start} set to {value}"
        elif fmt == "tflite":
            pool = fields["length"] + fields["offset"] if kind == "huge-length" else fields["scalar"]
            at = rng.choice(pool)
            value = rng.choice(HUGE_U32 + (size, size + 4, (_u32(data, at) + 1) & 0xFFFFFFFF))
            struct.pack_into("<I", b, at, value)
            role = ("vector length" if at in fields["length"] else "offset") if kind == "huge-length" else "scalar"
            what = f"{role} at {at} set to {value:#x}"
        else:
            start, after = rng.choice(fields["length"] if kind == "huge-length" else fields["varint"])
            value = rng.choice(HUGE_VARINT)
            same_width = rng.random() < 0.5          # the largest value of the same width keeps the layout
            encoded = (bytes([0xFF] * (after - start - 1) + [0x7F]) if same_width else _encode_varint(value))
            b[start:after] = encoded
            role = "length prefix" if kind == "huge-length" else "varint"
            what = f"{role} at {start} set to {_varint(encoded, 0)[0]:#x}"
        out.append((f"{fmt} {kind}: {what}", bytes(b)))
    return out


# --- running them -------------------------------------------------------------------------------------

def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FASHION_EDGE_MODEL"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def verdict(model: Path, rc: int | None, stderr: str) -> str:
    """'answer', 'clean error', or what else happened."""
    if rc is None:
        return "other: hang"
    if rc < 0:
        return f"other: signal {-rc}"
    if rc == 0:
        return "answer"
    lines = [line for line in stderr.strip().splitlines()
             if line not in RUNTIME_NOTICES and not line.startswith(WARNING)]
    if rc == ERROR_EXIT and len(lines) == 1 and lines[0].startswith("edge-classify: ") and model.name in lines[0]:
        return "clean error"
    return f"other: exit {rc}, {len(lines)} lines: {stderr.strip()[-600:]}"


def run_alone(model: Path, image: Path) -> tuple[str, str]:
    """The real command for one case: (verdict, its stderr)."""
    cmd = [sys.executable, "-m", "edge_runtime", "--model", str(model), "--no-verify", str(image)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", cwd=REPO, env=_env(),
                              preexec_fn=_limits, timeout=CASE_TIME_LIMIT_S)
    except subprocess.TimeoutExpired:
        return "other: hang", ""
    return verdict(model, done.returncode, done.stderr), done.stderr


def run_batch(models: list[Path], image: Path) -> dict[Path, str]:
    """Verdicts for `models`, many per child; a case that kills or hangs its child, or that the child did not
    find clean, is run alone."""
    verdicts: dict[Path, str] = {}
    todo = list(models)
    while todo:
        p = subprocess.Popen([sys.executable, "-c", CHILD, str(image), *map(str, todo)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, errors="replace", cwd=REPO, env=_env(),
                             preexec_fn=_limits)
        try:
            out, _ = p.communicate(timeout=CASE_TIME_LIMIT_S + 2 * len(todo))
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        for line in out.splitlines():
            got = json.loads(line)
            model = Path(got["model"])
            verdicts[model] = verdict(model, got["rc"], got["stderr"])
            if verdicts[model] not in ("answer", "clean error"):
                verdicts[model] = run_alone(model, image)[0]
            todo.remove(model)
        if todo and p.returncode != 0:               # the child died (or hung) on this one
            verdicts[todo[0]] = run_alone(todo[0], image)[0]
            todo.pop(0)
    return verdicts


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fuzz-image") / "garment.png"
    yy, xx = np.mgrid[0:28, 0:28]
    Image.fromarray(np.where(np.abs(xx - 13.5) < 4 + yy * 0.3, 180, 0).astype(np.uint8)).save(path)
    return path


def _cases(folder: Path, n: int) -> dict[Path, str]:
    """Write `n` mutated model files into `folder` (no manifest beside them: the model's own metadata is read
    too); {path: what was done}."""
    rng = random.Random(SEED)
    cases = {}
    for fmt, count in (("tflite", n - n // 2), ("onnx", n // 2)):
        source = EXPORTED / f"model_int8.{fmt}"
        if not source.is_file():
            pytest.skip(f"no release model {source} (make export)")
        for what, data in mutations(source.read_bytes(), fmt, count, rng):
            path = folder / f"case{len(cases):04d}.{fmt}"
            path.write_bytes(data)
            cases[path] = what
    return cases


def test_walkers_find_the_length_fields_of_the_release_models():
    """The mutations aim at real fields: the walkers read the whole flatbuffer and protobuf."""
    tflite = _flatbuffer_fields((EXPORTED / "model_int8.tflite").read_bytes())
    onnx = _protobuf_fields((EXPORTED / "model_int8.onnx").read_bytes())
    assert len(tflite["length"]) > 20 and len(tflite["offset"]) > 20 and len(tflite["scalar"]) > 20
    assert len(onnx["length"]) > 20 and len(onnx["varint"]) > 20


def test_broken_release_models_end_in_an_answer_or_one_error_line(tmp_path, image):
    t0 = time.monotonic()
    cases = _cases(tmp_path, CASES)
    paths = list(cases)
    workers = max(1, min(2, os.cpu_count() or 1))
    batches = [paths[i : i + BATCH] for i in range(0, len(paths), BATCH)]
    verdicts: dict[Path, str] = {}
    with ThreadPoolExecutor(workers) as pool:
        for got in pool.map(lambda batch: run_batch(batch, image), batches):
            verdicts.update(got)
    counts = Counter(v if v in ("answer", "clean error") else "other" for v in verdicts.values())
    by_kind = Counter((cases[p].split(":")[0], v if v in ("answer", "clean error") else "other")
                      for p, v in verdicts.items())
    print(f"\n  [fuzz] {len(verdicts)} cases (seed {SEED}) in {time.monotonic() - t0:.1f} s: exit 0 {counts['answer']}, "
          f"clean error {counts['clean error']}, other {counts['other']}")
    for (kind, v), k in sorted(by_kind.items()):
        print(f"  [fuzz]   {kind:20s} {v:12s} {k}")
    others = [f"{p.name} ({cases[p]}): {v}" for p, v in verdicts.items() if v.startswith("other")]
    assert len(verdicts) == len(cases)
    assert not others, "\n".join(others)


# --- what crashed LiteRT, pinned -----------------------------------------------------------------------

def _release_fields() -> tuple[bytes, dict]:
    """The release .tflite and, per operator, its opcode and the positions of its input and output indices."""
    buf = (EXPORTED / "model_int8.tflite").read_bytes()
    model = _u32(buf, 0)

    def field(table: int, slot: int) -> int | None:
        vtable = table - struct.unpack_from("<i", buf, table)[0]
        off = struct.unpack_from("<H", buf, vtable + 4 + 2 * slot)[0] if 4 + 2 * slot < _u16(vtable) else 0
        return table + off if off else None

    def _u16(at: int) -> int:
        return struct.unpack_from("<H", buf, at)[0]

    def vector(table: int, slot: int) -> list[int]:
        start = field(table, slot) + _u32(buf, field(table, slot))
        return [start + 4 + 4 * i for i in range(_u32(buf, start))]

    codes = [struct.unpack_from("<i", buf, field(at + _u32(buf, at), 3))[0] for at in vector(model, 1)]
    subgraph = vector(model, 2)[0] + _u32(buf, vector(model, 2)[0])
    tensors = [at + _u32(buf, at) for at in vector(subgraph, 0)]
    ops = []
    for at in vector(subgraph, 3):
        op = at + _u32(buf, at)
        opcode = 0 if field(op, 0) is None else _u32(buf, field(op, 0))          # absent: the default, 0
        ops.append({"code": codes[opcode], "inputs": vector(op, 1), "outputs": vector(op, 2)})
    return buf, {"ops": ops, "tensor_buffer": [field(t, 2) for t in tensors], "subgraph_outputs": vector(subgraph, 2)}


@pytest.mark.parametrize("crash", ["output with constant data", "conv without weights", "dense without weights",
                                   "model output is no tensor"])
def test_what_crashed_litert_is_one_error_line_and_litert_alone_still_crashes(tmp_path, image, crash):
    """The kinds of file the fuzzer found LiteRT dying on: the CLI names the problem in one line
    (edge_runtime.model_check); the interpreter handed the same file directly still dies by SIGSEGV (when it
    stops doing so, the check may go). A model output of -1 made it abort only now and then (an out-of-bounds
    read), so only the line is checked for that one."""
    buf, f = _release_fields()
    b = bytearray(buf)
    if crash == "output with constant data":
        op = next(o for o in f["ops"] if o["code"] == 40)                          # MEAN: its output ← a weight
        tensor = _u32(buf, op["outputs"][0])
        weights = _u32(buf, f["tensor_buffer"][_u32(buf, f["ops"][0]["inputs"][1])])
        struct.pack_into("<I", b, f["tensor_buffer"][tensor], weights)
        words = f"tensor {tensor} of subgraph 0 is written by operator"
    elif crash == "model output is no tensor":
        struct.pack_into("<i", b, f["subgraph_outputs"][0], -1)
        words = "model output -1 of subgraph 0 is no tensor"
    else:
        op = next(o for o in f["ops"] if o["code"] == (3 if crash == "conv without weights" else 9))
        struct.pack_into("<i", b, op["inputs"][1], -1)
        words = "has no weights (input 1 is -1)"
    model = tmp_path / "broken.tflite"
    model.write_bytes(bytes(b))
    got, stderr = run_alone(model, image)
    assert got == "clean error" and words in stderr and "LiteRT crashes on such files" in stderr, stderr
    if crash == "model output is no tensor":
        return
    direct = textwrap.dedent("""
        import sys, numpy as np
        from ai_edge_litert.interpreter import Interpreter
        i = Interpreter(model_path=sys.argv[1]); i.allocate_tensors()
        i.set_tensor(i.get_input_details()[0]["index"], np.zeros(i.get_input_details()[0]["shape"], np.int8))
        i.invoke()
    """)
    done = subprocess.run([sys.executable, "-c", direct, str(model)], capture_output=True, preexec_fn=_limits,
                          timeout=CASE_TIME_LIMIT_S)
    assert done.returncode < 0, done.stderr[-500:]
