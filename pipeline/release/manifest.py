"""The release's manifest.json: the one module that builds, reads, updates and writes it.

`edge_runtime` reads it beside every model (labels, normalization, each artifact's sha256, int8 input and
output parameters, temperature), so its schema is the device's contract. Schema 1, top level:

- `schema`, `created` (UTC), `git_commit`, `seed`, `config` (the whole `Config`), `labels` (10 names),
  `input` (28×28×1 NHWC and `normalization` {mean, std}: model input = (pixel/255 − mean) / std);
- `artifacts`: one entry per file: `file`, `format`, `precision`, `bytes`, `gzip_bytes`, `sha256`, `input` and
  `output` (dtype, and scale/zero_point when int8), the parity figures (`accuracy`, `agreement_with_float`,
  `per_class_accuracy`, `correct`, `correct_first_1000`, `kernels` for a .tflite) and `calibration`
  (temperature scaling: `temperature`, ECE before/after; not for the RGB model);
- `gate`, `float_reference`, `pruning`, `onnx_int8` (which int8 ONNX ships and why), `onnx_opencv`,
  `rgb_model`, `test_images`, `tools`, `sizes`, `photos_train` (real-photo adaptation or null),
  `real_photos` (the dev photos), and for an imported model `import` and `device_cost`.
"""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from pipeline.data.fashion_mnist import CLASS_NAMES
from pipeline.config import Config
from pipeline.release.provenance import git_commit, gzip_bytes, sha256

SCHEMA = 1
FILE = "manifest.json"

ARTIFACTS = {  # file → (format, precision): what edge_runtime runs
    "model_float.tflite": ("tflite", "float32"),
    "model_int8.tflite": ("tflite", "int8"),
    "model_float.onnx": ("onnx", "float32"),
    "model_int8.onnx": ("onnx", "int8"),
}
# The MediaPipe-ready model (uint8 RGB input, normalization inside): validated and gated like the others,
# but run in LiteRT directly, since edge_runtime takes 28x28x1 models.
RGB_ARTIFACT = "model_int8_rgb.tflite"
ALL_ARTIFACTS = {**ARTIFACTS, RGB_ARTIFACT: ("tflite", "int8")}


def input_spec(cfg: Config) -> dict:
    """The model input every artifact but the RGB one takes."""
    return {"height": 28, "width": 28, "channels": 1, "layout": "NHWC",
            "normalization": {"mean": cfg.data.mean, "std": cfg.data.std}}


def minimal(cfg: Config) -> dict:
    """Labels and normalization only: what edge_runtime needs beside a model that is measured, not shipped."""
    return {"schema": SCHEMA, "labels": list(CLASS_NAMES), "artifacts": [], "input": input_spec(cfg)}


def artifact_entry(folder: Path, name: str, io: dict) -> dict:
    """The entry of one file in `folder`: what it is, its size and hash, its input and output tensors."""
    fmt, precision = ALL_ARTIFACTS[name]
    path = Path(folder) / name
    return {"file": name, "format": fmt, "precision": precision, "bytes": path.stat().st_size,
            "gzip_bytes": gzip_bytes(path), "sha256": sha256(path), "input": io["input"], "output": io["output"]}


def build(cfg: Config, entries: list[dict]) -> dict:
    """A new manifest for the artifacts in `entries`; the stages' figures are added with `update`."""
    return {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git_commit(),
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "labels": list(CLASS_NAMES),
        "input": input_spec(cfg),
        "artifacts": entries,
    }


def update(manifest: dict, **sections) -> dict:
    """`manifest` with top-level sections set (None values are kept: null says 'not done for this release')."""
    manifest.update(sections)
    return manifest


def entry(manifest: dict, name: str) -> dict:
    """The artifact entry of file `name`."""
    return next(e for e in manifest["artifacts"] if e["file"] == name)


def read(folder: Path) -> dict:
    return json.loads((Path(folder) / FILE).read_text())


def write(folder: Path, manifest: dict) -> Path:
    """Write `folder`/manifest.json atomically (temporary file, then rename)."""
    path = Path(folder) / FILE
    write_json(path, manifest)
    return path


def write_json(path: Path, obj) -> None:
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)
