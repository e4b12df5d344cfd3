"""What a model file holds, read before any Keras loader or TensorFlow function touches it (issue #29).

A model file is a program: a Lambda layer is marshalled Python bytecode that `load_model` and `predict`
run, a layer Keras does not ship is code from elsewhere, and a SavedModel's functions can write files or
call back into Python. `scan` reads the model config (a .keras archive's config.json, an HDF5 file's
`model_config`, a SavedModel's keras_metadata.pb) and every graph and library function of a SavedModel,
executing nothing: json, zipfile and h5py for .keras and .h5 (TensorFlow is not imported), the
SavedModel proto for a folder. What would run on this machine is refused unless the user says they trust
the file (`export --trust-model`); a file too damaged to read is an error either way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.errors import ModelError
from pipeline.keras_import.contents import HDF5_SIGNATURE, Contents
from pipeline.keras_import.scan_config import scan_h5, scan_keras3
from pipeline.keras_import.scan_graph import scan_savedmodel


def scan(path: str | Path) -> Contents:
    """Read what the model file holds without running any of it; a damaged file is a ModelError, code it
    carries is listed in `refused` (the caller decides: `admit`)."""
    p = Path(path)
    expected = "expected a Keras 3 .keras archive, an HDF5 .h5 or a SavedModel folder"
    if not p.exists():
        raise ModelError(f"{p}: no such file or folder")
    if p.is_dir():
        if not (p / "saved_model.pb").is_file():
            raise ModelError(f"{p}: a folder without saved_model.pb, not a SavedModel; {expected}")
        fmt = "keras2-savedmodel" if (p / "keras_metadata.pb").is_file() else "savedmodel"
        contents = Contents(p, fmt)
        scan_savedmodel(p, contents)
        return contents
    with p.open("rb") as f:
        head = f.read(8)
    if head.startswith(b"PK"):
        contents = Contents(p, "keras3")
        scan_keras3(p, contents)
        return contents
    if head == HDF5_SIGNATURE:
        contents = Contents(p, "keras2-h5")
        contents.format = scan_h5(p, contents)
        return contents
    raise ModelError(f"{p}: not a Keras model file; {expected}")


def admit(cfg, trust: bool | None = None):
    """Scan `cfg.keras_model.path`; refuse what would run here unless trusted (`trust`, else what `cfg.origin`
    recorded). Returns `cfg` with origin {"trusted": True, "carried": [...]} when trusted."""
    contents = scan(cfg.keras_model.path)
    if trust is None:
        trust = isinstance(cfg.origin, dict) and cfg.origin.get("trusted") is True
    if contents.refused and not trust:
        raise contents.error()
    if not trust:
        return cfg
    return dataclasses.replace(cfg, origin={"trusted": True, "carried": contents.carried})


def trusted(cfg) -> dict:
    """The trust record `admit` put in the origin ({} when the file was not trusted), for the manifest."""
    if isinstance(cfg.origin, dict) and cfg.origin.get("trusted") is True:
        return {"trusted": True, "carried": list(cfg.origin.get("carried", []))}
    return {}


def as_is_note(cfg) -> str:
    """What exporting a model unchanged runs besides its layers, for the messages that offer --no-prune."""
    carried = trusted(cfg).get("carried")
    return f" — including the code it carries, which runs on this machine ({', '.join(carried)})" if carried else ""
