"""The pinned references every timing and memory gate is measured against (benchmarks/reference/).

`make bench-baseline` accepts a release: it copies its model files and manifest here, and the edge
runtime's code as it is then, zipped (edge_runtime.zip, the package renamed `edge_runtime_ref` so it
imports beside the current one). A gate then runs today's artifact or today's runtime and its pinned
reference in one process, on the same CPU with the same kernels, so their ratio is 1 on any machine
until the code or the release changes.
"""
from __future__ import annotations

import atexit
import hashlib
import importlib
import io
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from .common import ARTIFACTS, BENCH_DIR, ROOT, BenchError

REFERENCE_DIR = BENCH_DIR / "reference"
RUNTIME_ZIP = "edge_runtime.zip"
RUNTIME_SOURCE = ROOT / "edge_runtime"
REF_PACKAGE = "edge_runtime_ref"
MANIFEST = "manifest.json"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)   # fixed, so the same code always makes the same zip




def path(name: str, folder: Path = REFERENCE_DIR) -> Path:
    """A pinned file, or BenchError saying how to make it."""
    p = Path(folder) / name
    if not p.is_file():
        raise BenchError(f"{p}: no pinned reference; accept a release with `make bench-baseline`")
    return p


def runtime_sources(source: Path = RUNTIME_SOURCE) -> dict[str, bytes]:
    """The runtime's files that make its behaviour: its Python modules and the --serve page."""
    return {p.name: p.read_bytes() for p in sorted(Path(source).iterdir())
            if p.is_file() and p.suffix in (".py", ".html")}


def pack_runtime(source: Path = RUNTIME_SOURCE) -> bytes:
    """The runtime's code as a zip of the package renamed `edge_runtime_ref` (byte-identical for the same code)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in runtime_sources(source).items():
            info = zipfile.ZipInfo(f"{REF_PACKAGE}/{name}", _ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return buf.getvalue()


def zipped_sources(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {Path(n).name: z.read(n) for n in z.namelist() if not n.endswith("/")}


def extract_runtime(dest: Path, folder: Path = REFERENCE_DIR) -> Path:
    """Unpack the pinned runtime into `dest` (dest/edge_runtime_ref/…); returns `dest`, the folder to put on sys.path."""
    with zipfile.ZipFile(path(RUNTIME_ZIP, folder)) as z:
        z.extractall(dest)
    return Path(dest)


_imported: dict[Path, object] = {}


def import_runtime(folder: Path = REFERENCE_DIR):
    """The pinned runtime as a package `edge_runtime_ref` in this process, beside today's `edge_runtime`.

    Its modules are imported under their own names (edge_runtime_ref.classifier, .timing, …), so the two
    share nothing but numpy, Pillow and the backend libraries."""
    folder = Path(folder).resolve()
    if folder in _imported:
        return _imported[folder]
    if _imported:
        raise BenchError("one pinned runtime per process")
    tmp = Path(tempfile.mkdtemp(prefix="edge-runtime-ref-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    sys.path.insert(0, str(extract_runtime(tmp, folder)))
    package = importlib.import_module(REF_PACKAGE)
    for module in ("classifier", "timing", "preprocess", "backends"):
        importlib.import_module(f"{REF_PACKAGE}.{module}")
    _imported[folder] = package
    return package


def pinned_files(folder: Path = REFERENCE_DIR) -> dict[str, dict]:
    """{file: {"sha256", "bytes"}} of what is pinned in `folder` now."""
    out = {}
    for name in (*ARTIFACTS, MANIFEST, RUNTIME_ZIP):
        p = Path(folder) / name
        if p.is_file():
            data = p.read_bytes()
            out[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return out


def check_pinned(recorded: dict, folder: Path = REFERENCE_DIR) -> list[str]:
    """What differs between the pinned files and the checksums the baseline recorded for them."""
    found = pinned_files(folder)
    problems = []
    for name, entry in recorded.items():
        if name not in found:
            problems.append(f"{Path(folder) / name} is missing")
        elif found[name]["sha256"] != entry["sha256"]:
            problems.append(f"{Path(folder) / name} does not match the sha256 benchmarks/baseline.json records")
    return problems


def accept(release: Path, names: list[str], folder: Path = REFERENCE_DIR) -> dict[str, dict]:
    """Pin the release's `names`, its manifest and today's runtime code in `folder`, replacing what was there
    in one rename (a failure leaves the previous references whole). Returns the new `pinned_files`."""
    folder = Path(folder)
    staging = Path(tempfile.mkdtemp(prefix=".reference-new-", dir=folder.parent))
    try:
        for name in [*names, MANIFEST]:
            shutil.copy2(Path(release) / name, staging / name)
        (staging / RUNTIME_ZIP).write_bytes(pack_runtime())
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            os.replace(folder, old)
        staging.chmod(0o755)
        os.replace(staging, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return pinned_files(folder)


def runtime_changes(old_zip: bytes | None, new_zip: bytes) -> list[str]:
    """The runtime files that differ between two pinned zips: 'classifier.py (changed)', …"""
    old = zipped_sources(old_zip) if old_zip else {}
    new = zipped_sources(new_zip)
    out = [f"{n} (changed)" for n in sorted(set(old) & set(new)) if old[n] != new[n]]
    out += [f"{n} (new)" for n in sorted(set(new) - set(old))]
    out += [f"{n} (removed)" for n in sorted(set(old) - set(new))]
    return out
