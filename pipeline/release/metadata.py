"""Metadata inside every artifact: TFLite Metadata (labels file, normalization, image properties) and ONNX
`metadata_props` (labels, normalization, layout) plus a doc string, so one model file says what it is.

The TFLite Metadata is written through the metadata schema (metadata_schema.fbs, file identifier "M001")
with `flatbuffers`, as tflite-support's MetadataPopulator does: tflite-support pins protobuf and numpy
below what TensorFlow 2.21 needs, so it does not install beside it. The labels file is packed, as the
schema asks, in a zip archive appended to the flatbuffer. MediaPipe's own metadata reader is the check
(tests/test_compat.py).
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import flatbuffers
import onnx
from tensorflow.lite.python import schema_py_generated as tfl

METADATA_FIELD = "TFLITE_METADATA"       # the name readers look for in Model.metadata
METADATA_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"             # only fields of the first schema version are written
LABELS_FILE = "labels.txt"
# Enum values of metadata_schema.fbs.
_TENSOR_AXIS_LABELS = 2
_COLOR_RGB, _COLOR_GRAYSCALE = 1, 2
_CONTENT_IMAGE_PROPERTIES = 2
_UNIT_NORMALIZATION = 1


def _table(b: flatbuffers.Builder, fields: list) -> int:
    """One table from (slot, kind, value) fields; kind: 'off' (offset), 'u8', 'u32'. None values are left out."""
    b.StartObject(max(slot for slot, _, _ in fields) + 1)
    for slot, kind, value in fields:
        if value is None:
            continue
        {"off": b.PrependUOffsetTRelativeSlot, "u8": b.PrependUint8Slot,
         "u32": b.PrependUint32Slot}[kind](slot, value, 0)
    return b.EndObject()


def _vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _floats(b: flatbuffers.Builder, values: list[float]) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(v)
    return b.EndVector()


def tflite_metadata(*, name: str, description: str, version: str, channels: int, height: int, width: int,
                    mean: float | None, std: float | None, labels_description: str) -> bytes:
    """The ModelMetadata flatbuffer of an image classifier with one input and one output.

    `mean`/`std` are in pixel units (0..255), as the schema defines them: float input = (pixel - mean) / std.
    None leaves normalization out (a model that takes raw pixels and normalizes inside its graph)."""
    b = flatbuffers.Builder(1024)
    s = b.CreateString
    size = _table(b, [(0, "u32", width), (1, "u32", height)])
    props = _table(b, [(0, "u8", _COLOR_RGB if channels == 3 else _COLOR_GRAYSCALE), (1, "off", size)])
    content = _table(b, [(0, "u8", _CONTENT_IMAGE_PROPERTIES), (1, "off", props)])
    units = None
    if mean is not None:
        norm = _table(b, [(0, "off", _floats(b, [mean] * channels)), (1, "off", _floats(b, [std] * channels))])
        units = _vector(b, [_table(b, [(0, "u8", _UNIT_NORMALIZATION), (1, "off", norm)])])
    in_name, in_desc = s("image"), s(f"{height}x{width} {'RGB' if channels == 3 else 'grayscale'} image")
    inp = _table(b, [(0, "off", in_name), (1, "off", in_desc), (3, "off", content), (4, "off", units)])
    label_file = _table(b, [(0, "off", s(LABELS_FILE)), (1, "off", s(labels_description)),
                            (2, "u8", _TENSOR_AXIS_LABELS)])
    out_name, out_desc = s("probability"), s("probability of each class, in the order of labels.txt")
    out = _table(b, [(0, "off", out_name), (1, "off", out_desc), (6, "off", _vector(b, [label_file]))])
    subgraph = _table(b, [(2, "off", _vector(b, [inp])), (3, "off", _vector(b, [out]))])
    model = _table(b, [(0, "off", s(name)), (1, "off", s(description)), (2, "off", s(version)),
                       (3, "off", _vector(b, [subgraph])), (4, "off", s("fashion-edge")),
                       (5, "off", s("Apache-2.0")), (7, "off", s(MIN_PARSER_VERSION))])
    b.Finish(model, file_identifier=METADATA_IDENTIFIER)
    return bytes(b.Output())


def embed_tflite(model_bytes: bytes, metadata: bytes, labels: list[str]) -> bytes:
    """`model_bytes` with `metadata` in a new buffer named TFLITE_METADATA and labels.txt in a zip tail."""
    model = tfl.ModelT.InitFromObj(tfl.Model.GetRootAs(model_bytes, 0))
    model.metadata = [m for m in (model.metadata or []) if m.name.decode() != METADATA_FIELD]
    buffer = tfl.BufferT()
    buffer.data = list(metadata)
    model.buffers.append(buffer)
    entry = tfl.MetadataT()
    entry.name, entry.buffer = METADATA_FIELD, len(model.buffers) - 1
    model.metadata.append(entry)
    b = flatbuffers.Builder(len(model_bytes) + len(metadata) + 1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    # The schema keeps associated files in a zip archive appended to the flatbuffer (what
    # MetadataPopulator writes): flatbuffer readers ignore the tail, zip readers find it from the end.
    out = io.BytesIO(bytes(b.Output()))
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as z:
        info = zipfile.ZipInfo(LABELS_FILE, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
        z.writestr(info, "\n".join(labels) + "\n")
    return out.getvalue()


def write_tflite(path: Path, labels: list[str], mean: float | None, std: float | None, *, description: str,
                 version: str, channels: int = 1) -> None:
    """Rewrite the .tflite at `path` with its metadata; `mean`/`std` as the model sees them (x/255 - mean) / std."""
    meta = tflite_metadata(
        name=path.stem, description=description, version=version, channels=channels, height=28, width=28,
        mean=None if mean is None else mean * 255.0, std=None if std is None else std * 255.0,
        labels_description="Fashion-MNIST class names, one a line, in output order")
    path.write_bytes(embed_tflite(path.read_bytes(), meta, labels))


def write_onnx(path: Path, labels: list[str], mean: float, std: float, *, description: str, version: str) -> None:
    """Add labels, normalization and layout to the ONNX model's metadata_props (keeping what is there)."""
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(labels=json.dumps(labels), normalization=json.dumps({"mean": mean, "std": std, "scale": 255.0}),
                 layout="NHWC", input_size="28x28x1", color_space="GRAYSCALE", version=version)
    onnx.helper.set_model_props(model, props)
    model.doc_string = (f"{description} Input: (N, 28, 28, 1) {'int8' if 'input_scale' in props else 'float32'} "
                        f"NHWC grayscale, (pixel/255 - {mean}) / {std}"
                        + (", then quantized with input_scale and input_zero_point" if "input_scale" in props else "")
                        + f". Output: (N, {len(labels)}) class probabilities in the order of the labels property.")
    onnx.save(model, str(path))


def write_all(cfg, out: Path, labels: list[str], version: str) -> None:
    """Labels, normalization and a description into every model file in `out`."""
    from pipeline.release.manifest import ARTIFACTS, RGB_ARTIFACT
    what = "Fashion-MNIST clothing classifier ({}), 10 classes, from the pruned tf_keras model."
    if isinstance(cfg.origin, dict):
        what = (f"Fashion-MNIST clothing classifier ({{}}), 10 classes, imported from {cfg.origin['file']}"
                f"{', pruned' if cfg.prune.enabled else ''}.")
    for name, (fmt, precision) in ARTIFACTS.items():
        if fmt == "tflite":
            write_tflite(out / name, labels, cfg.data.mean, cfg.data.std, version=version,
                         description=what.format(f"{precision}, 28x28 grayscale input"))
        else:
            write_onnx(out / name, labels, cfg.data.mean, cfg.data.std, version=version,
                       description=what.format(precision))
    write_tflite(out / RGB_ARTIFACT, labels, None, None, version=version, channels=3,
                 description=what.format("int8 inside, uint8 RGB input 0..255; grayscale and "
                                         "normalization are in the graph"))
