"""Labels and normalization read from the model file itself, for a model copied without its manifest.json.

TFLite: the TFLite Metadata flatbuffer (metadata_schema.fbs) in the buffer named TFLITE_METADATA, and the
labels file from the zip archive appended to the model. ONNX: `metadata_props` (onnxruntime's
custom_metadata_map). The flatbuffers are read with `struct`, so a device needs no flatbuffers, TensorFlow
or tflite-support (tflite-runtime does not bring flatbuffers).
"""
from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .errors import EdgeError

_TENSOR_AXIS_LABELS = 2
_NORMALIZATION = 1


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about itself: labels, and normalization as (x/255 - mean) / std."""

    labels: tuple[str, ...] | None = None
    mean: float | None = None
    std: float | None = None


class _Table:
    """A flatbuffers table: a position in `buf` and its vtable (the flatbuffers binary format)."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vsize = struct.unpack_from("<H", buf, self.vtable)[0]

    def _field(self, slot: int) -> int | None:
        at = 4 + 2 * slot
        if at >= self.vsize:
            return None
        off = struct.unpack_from("<H", self.buf, self.vtable + at)[0]
        return self.pos + off if off else None

    def scalar(self, slot: int, fmt: str, default=0):
        at = self._field(slot)
        return default if at is None else struct.unpack_from("<" + fmt, self.buf, at)[0]

    def _indirect(self, at: int) -> int:
        return at + struct.unpack_from("<I", self.buf, at)[0]

    def table(self, slot: int) -> _Table | None:
        at = self._field(slot)
        return None if at is None else _Table(self.buf, self._indirect(at))

    def _vector(self, slot: int) -> tuple[int, int] | None:
        at = self._field(slot)
        if at is None:
            return None
        start = self._indirect(at)
        return start + 4, struct.unpack_from("<I", self.buf, start)[0]

    def tables(self, slot: int) -> list[_Table]:
        v = self._vector(slot)
        return [] if v is None else [_Table(self.buf, self._indirect(v[0] + 4 * i)) for i in range(v[1])]

    def floats(self, slot: int) -> list[float]:
        v = self._vector(slot)
        return [] if v is None else list(struct.unpack_from(f"<{v[1]}f", self.buf, v[0]))

    def bytes(self, slot: int) -> bytes | None:
        v = self._vector(slot)
        return None if v is None else self.buf[v[0] : v[0] + v[1]]

    def string(self, slot: int) -> str | None:
        raw = self.bytes(slot)
        return None if raw is None else raw.decode("utf-8")


def _root(buf: bytes) -> _Table:
    return _Table(buf, struct.unpack_from("<I", buf, 0)[0])


def tflite_metadata_buffer(model: bytes) -> bytes | None:
    """The TFLITE_METADATA flatbuffer of a .tflite model, or None when it has none."""
    root = _root(model)
    buffers = root.tables(4)                          # Model.buffers
    for entry in root.tables(6):                      # Model.metadata: (name, buffer index)
        if entry.string(0) == "TFLITE_METADATA":
            buffer = buffers[entry.scalar(1, "I")]
            data = buffer.bytes(0)
            if not data:                              # stored after the flatbuffer (models over 2 GB)
                offset, size = buffer.scalar(1, "Q"), buffer.scalar(2, "Q")
                data = model[offset : offset + size]
            return data
    return None


def read_tflite(path: Path) -> ModelInfo:
    """Labels (the TENSOR_AXIS_LABELS file of the output) and normalization (the input's
    NormalizationOptions, in pixel units) from a .tflite file; empty when it carries no metadata."""
    model = Path(path).read_bytes()
    try:
        meta = tflite_metadata_buffer(model)
        if meta is None:
            return ModelInfo()
        if meta[4:8] != b"M001":
            raise EdgeError(f"{path}: TFLITE_METADATA is not a metadata flatbuffer (no 'M001' identifier)")
        subgraphs = _root(meta).tables(3)
        if not subgraphs:
            return ModelInfo()
        inputs, outputs = subgraphs[0].tables(2), subgraphs[0].tables(3)
        mean = std = None
        for unit in inputs[0].tables(4) if inputs else []:
            if unit.scalar(0, "B") == _NORMALIZATION:
                options = unit.table(1)
                means, stds = options.floats(0), options.floats(1)
                if means and stds:
                    # One value per channel; the models here take one grayscale channel.
                    mean, std = means[0] / 255.0, stds[0] / 255.0
        label_file = next((f.string(0) for f in (outputs[0].tables(6) if outputs else [])
                           if f.scalar(2, "b") == _TENSOR_AXIS_LABELS), None)
    except (struct.error, IndexError, UnicodeDecodeError, AttributeError) as e:
        raise EdgeError(f"{path}: the TFLite metadata is corrupt ({e})") from e
    labels = None
    if label_file is not None:
        try:
            with zipfile.ZipFile(io.BytesIO(model)) as z:
                labels = _labels(z.read(label_file).decode("utf-8"))
        except (zipfile.BadZipFile, KeyError) as e:
            raise EdgeError(f"{path}: metadata names {label_file} but the model carries no such file ({e})") from e
        # A damaged archive fails in more ways than zipfile names (tests/test_edge_fuzz.py found the first three).
        except (EOFError, NotImplementedError, UnicodeDecodeError, zlib.error, RuntimeError, ValueError) as e:
            raise EdgeError(f"{path}: the labels file {label_file} packed in the model cannot be read "
                            f"({type(e).__name__}: {str(e) or 'cut short'}); the file is corrupt") from e
    return ModelInfo(labels, mean, std)


def read_onnx(metadata_props: dict[str, str], path: Path) -> ModelInfo:
    """Labels and normalization from an ONNX model's metadata_props (as fashion-edge writes them)."""
    try:
        labels = tuple(json.loads(metadata_props["labels"])) if "labels" in metadata_props else None
        norm = json.loads(metadata_props["normalization"]) if "normalization" in metadata_props else {}
        mean = float(norm["mean"]) if "mean" in norm else None
        std = float(norm["std"]) if "std" in norm else None
    except (ValueError, TypeError, KeyError) as e:
        raise EdgeError(f"{path}: metadata_props labels/normalization are not valid JSON ({e})") from e
    if labels is not None and not all(isinstance(x, str) for x in labels):
        raise EdgeError(f"{path}: metadata_props 'labels' must be a JSON list of strings")
    return ModelInfo(labels, mean, std)


def _labels(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())
