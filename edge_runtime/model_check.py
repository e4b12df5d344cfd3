"""A .tflite file's graph checked for what crashes LiteRT (SIGSEGV) instead of raising, before it is loaded.

LiteRT verifies the flatbuffer's structure and most of the graph and raises a clear error; tests/test_edge_fuzz.py
found three kinds of file it accepts and then crashes the process on (ai-edge-litert 2.3, XNNPACK on x86-64):
- a tensor that an operator writes but that holds constant data (its buffer index changed to another, non-empty
  buffer): the operator writes into the read-only mapping of the model file, in invoke() (SIGSEGV);
- CONV_2D or FULLY_CONNECTED without its weights (input 1 set to -1, "optional"), in allocate_tensors() (SIGSEGV);
- a model input or output that is no tensor (index -1): the interpreter reads outside its tensor list, so
  get_output_details() raises with a garbage tensor count, or the process aborts (SIGABRT, 2 of 10,000 cases).
Read with `struct` (no flatbuffers package on the device). A file whose structure this cannot follow is left to
LiteRT's own verifier, which names what is wrong with it.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from .errors import EdgeError

# builtin operator code → the inputs its kernel reads without checking that they are there (measured)
WEIGHTS_NEEDED = {3: ("CONV_2D", 1), 9: ("FULLY_CONNECTED", 1)}


class _Reader:
    """Tables and vectors of a flatbuffer (the binary format), every read bounds-checked by struct."""

    def __init__(self, buf: bytes | mmap.mmap) -> None:
        self.buf = buf

    def _field(self, table: int, slot: int) -> int | None:
        vtable = table - struct.unpack_from("<i", self.buf, table)[0]
        if 4 + 2 * slot >= struct.unpack_from("<H", self.buf, vtable)[0]:
            return None
        off = struct.unpack_from("<H", self.buf, vtable + 4 + 2 * slot)[0]
        return table + off if off else None

    def _target(self, at: int) -> int:
        return at + struct.unpack_from("<I", self.buf, at)[0]

    def _vector(self, table: int, slot: int) -> tuple[int, int]:
        at = self._field(table, slot)
        if at is None:
            return 0, 0
        start = self._target(at)
        n = struct.unpack_from("<I", self.buf, start)[0]
        if start + 4 + 4 * n > len(self.buf):
            raise struct.error("vector past the end")
        return start + 4, n

    def tables(self, table: int, slot: int) -> list[int]:
        start, n = self._vector(table, slot)
        return [self._target(start + 4 * i) for i in range(n)]

    def ints(self, table: int, slot: int) -> list[int]:
        start, n = self._vector(table, slot)
        return list(struct.unpack_from(f"<{n}i", self.buf, start))

    def scalar(self, table: int, slot: int, fmt: str, default: int = 0) -> int:
        at = self._field(table, slot)
        return default if at is None else struct.unpack_from("<" + fmt, self.buf, at)[0]

    def holds_data(self, buffer: int) -> bool:
        """Whether a Buffer table has bytes: its data vector, or offset/size past the flatbuffer (over 2 GB)."""
        return self._vector(buffer, 0)[1] > 0 or self.scalar(buffer, 2, "Q") > 0


def check_tflite(path: Path, data: bytes | mmap.mmap | None = None) -> None:
    """EdgeError naming the file, the operator and the tensor when LiteRT would crash on this model."""
    if data is None:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return check_tflite(path, mapped)       # mapped, as LiteRT maps it: a large model is not read whole
    buf = data
    r = _Reader(buf)
    try:
        model = struct.unpack_from("<I", buf, 0)[0]
        codes = [max(r.scalar(c, 0, "b"), r.scalar(c, 3, "i")) for c in r.tables(model, 1)]
        buffers = r.tables(model, 4)
        problems = []
        for s, subgraph in enumerate(r.tables(model, 2)):
            tensors = r.tables(subgraph, 0)
            for which, slot in (("input", 1), ("output", 2)):
                bad = [t for t in r.ints(subgraph, slot) if not 0 <= t < len(tensors)]
                if bad:
                    problems.append(f"model {which} {bad[0]} of subgraph {s} is no tensor (it has {len(tensors)})")
            for o, op in enumerate(r.tables(subgraph, 3)):
                index = r.scalar(op, 0, "I")
                code = codes[index] if index < len(codes) else None
                inputs, outputs = r.ints(op, 1), r.ints(op, 2)
                if code in WEIGHTS_NEEDED:
                    name, k = WEIGHTS_NEEDED[code]
                    if len(inputs) > k and inputs[k] == -1:
                        problems.append(f"operator {o} ({name}) of subgraph {s} has no weights (input {k} is -1)")
                for t in outputs:
                    if not 0 <= t < len(tensors):
                        continue                  # LiteRT reports an index out of range itself
                    b = r.scalar(tensors[t], 2, "I")
                    if 0 < b < len(buffers) and r.holds_data(buffers[b]):
                        problems.append(f"tensor {t} of subgraph {s} is written by operator {o} but holds "
                                        f"constant data (buffer {b})")
    except (struct.error, IndexError):
        return          # a structure this cannot follow: LiteRT's verifier rejects it with its own message
    if problems:
        raise EdgeError(f"{path}: cannot load TFLite model ({problems[0]}; LiteRT crashes on such files); the file is "
                        "corrupt")
