"""Fashion-MNIST from the four original IDX files: search path, checksums, validation, splits.

The class names are the device's (edge_runtime/labels.py), so a manifest and the runtime cannot disagree.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import sys
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.labels import FASHION_MNIST_LABELS
from pipeline.config import KERAS_CACHE, SearchConfig, SeedConfig, search_path
from pipeline.errors import DataError

CLASS_NAMES = list(FASHION_MNIST_LABELS)

MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


@dataclass(frozen=True)
class IdxFile:
    name: str          # file name of the gzip-compressed original
    magic: int         # 0x803 images (3 dims), 0x801 labels (1 dim)
    count: int
    gz_md5: str        # MD5 Zalando publishes for the .gz it serves
    raw_sha256: str    # SHA-256 of the decompressed contents (the same whoever recompressed it)


FILES = {
    "train_images": IdxFile("train-images-idx3-ubyte.gz", 0x803, 60000, "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train_labels": IdxFile("train-labels-idx1-ubyte.gz", 0x801, 60000, "25c81989df183df01b3e8a0aad5dffbe",
                            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "test_images": IdxFile("t10k-images-idx3-ubyte.gz", 0x803, 10000, "bef4ecab320f06d8554ea6380940ec79",
                           "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "test_labels": IdxFile("t10k-labels-idx1-ubyte.gz", 0x801, 10000, "bb300cfdad3c16e7a12a480ee83cd310",
                           "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}


# --- IDX format -------------------------------------------------------------------------------

def read_idx_bytes(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse an uncompressed IDX (uint8) buffer; raise DataError naming `source` on any defect."""
    if len(raw) < 4:
        raise DataError(f"{source}: truncated IDX file ({len(raw)} bytes, no header)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 3:
        raise DataError(f"{source}: wrong magic number 0x{raw[:4].hex()} (expected 0x00000801 or 0x00000803)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{source}: truncated IDX header ({len(raw)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(f"{source}: {what}: {len(raw)} bytes, header {list(dims)} needs {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip-compressed when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    raw = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(raw, mtime=0) if path.suffix == ".gz" else raw)


def _decompress(path: Path) -> bytes:
    data = path.read_bytes()
    if not data:
        raise DataError(f"{path}: empty file (0 bytes)")
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as e:
        reason = "truncated gzip stream" if isinstance(e, EOFError) else f"corrupt gzip ({e})"
        raise DataError(f"{path}: {reason}") from None


def read_idx(path: str | Path, spec: IdxFile | None = None, verify: bool = True) -> np.ndarray:
    """Read one IDX file; with `spec`, check magic, shape, count and (if `verify`) the checksum."""
    path = Path(path)
    raw = _decompress(path)
    array = read_idx_bytes(raw, str(path))
    if spec is None:
        return array
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != spec.magic:
        raise DataError(f"{path}: wrong magic number 0x{magic:08x} (expected 0x{spec.magic:08x})")
    want_shape = (spec.count, 28, 28) if spec.magic == 0x803 else (spec.count,)
    if array.shape != want_shape:
        raise DataError(f"{path}: wrong dimensions {list(array.shape)} (expected {list(want_shape)})")
    if verify and hashlib.sha256(raw).hexdigest() != spec.raw_sha256:
        raise DataError(f"{path}: checksum mismatch (SHA-256 of contents is not Fashion-MNIST's)")
    return array


# --- finding the files --------------------------------------------------------------------------

def candidate_dirs(data_dir: str | None = None, search: list[str] | None = None) -> list[Path]:
    """The search order: the explicit folder, then `search` (default `SearchConfig.fashion_mnist`:
    $FASHION_MNIST_DIR, the Debian package, the Keras cache)."""
    found = [folder for _, folder in search_path(SearchConfig().fashion_mnist if search is None else search)]
    return [Path(data_dir).expanduser(), *found] if data_dir else found


def _find(spec: IdxFile, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for name in (spec.name, spec.name[:-3]):   # .gz or already decompressed
            if (d / name).is_file():
                return d / name
    return None


def download(spec: IdxFile, dest_dir: Path, mirror: str = MIRROR) -> Path:
    """Fetch one file from the official mirror, check the published MD5, then move it into place."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    url = mirror + spec.name
    print(f"downloading {url}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            data = r.read()
    except OSError as e:
        raise DataError(f"{spec.name}: not found locally and download from {url} failed ({e}); "
                        f"install the Debian package dataset-fashion-mnist or set FASHION_MNIST_DIR") from None
    if hashlib.md5(data).hexdigest() != spec.gz_md5:
        raise DataError(f"{url}: checksum mismatch (MD5 {hashlib.md5(data).hexdigest()}, expected {spec.gz_md5})")
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".part-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, dest_dir / spec.name)
    return dest_dir / spec.name


def locate(data_dir: str | None = None, allow_download: bool = True, search: list[str] | None = None) -> dict[str, Path]:
    """Path of each of the four files: the first folder in the search order that has it.

    An explicit `data_dir` is authoritative: a file missing there is an error, not a reason to
    look elsewhere, so a user never silently trains on other data than they pointed at.
    """
    dirs = [Path(data_dir).expanduser()] if data_dir else candidate_dirs(search=search)
    found = {}
    for key, spec in FILES.items():
        path = _find(spec, dirs)
        if path is None and data_dir:
            raise DataError(f"{Path(data_dir) / spec.name}: missing (the --data-dir must hold all four IDX files)")
        if path is None:
            if not allow_download:
                raise DataError(f"{spec.name}: not found in {', '.join(map(str, dirs))}")
            path = download(spec, Path(KERAS_CACHE).expanduser())
        found[key] = path
    return found


# --- the data set and its splits ---------------------------------------------------------------

@dataclass
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str = ""

    def describe(self) -> str:
        return (f"train {len(self.y_train)}, val {len(self.y_val)}, test {len(self.y_test)} "
                f"images from {self.source}")


def load_raw(data_dir: str | None = None, verify: bool = True, search: list[str] | None = None):
    """(x_train, y_train, x_test, y_test, source folder) as uint8 arrays, validated against the official files."""
    paths = locate(data_dir, search=search)
    arrays = {k: read_idx(p, FILES[k], verify=verify) for k, p in paths.items()}
    return arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"], \
        str(paths["train_images"].parent)


def stratified_indices(labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, picked) with `size` picked, in equal shares per class, seeded."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class, extra = divmod(size, len(classes))
    picked = []
    for i, c in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = per_class + (1 if i < extra else 0)
        if n > len(idx):
            raise ValueError(f"class {c} has {len(idx)} images, cannot pick {n}")
        picked.append(idx[:n])
    picked = np.sort(np.concatenate(picked))
    rest = np.setdiff1d(np.arange(len(labels)), picked)
    return rest, picked


def split(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *, val_size: int,
          seed: int, train_limit: int | None = None, test_limit: int | None = None, source: str = "",
          subset_seed_offset: int = SeedConfig.data) -> Splits:
    """Seeded stratified validation split; optional stratified training subset (seeded `seed` +
    `subset_seed_offset`) and test prefix."""
    for name, images, labels in (("training", x, y), ("test", x_test, y_test)):
        if len(images) != len(labels):
            raise DataError(f"{name} set: {len(images)} images but {len(labels)} labels")
    train_idx, val_idx = stratified_indices(y, val_size, seed)
    if train_limit:
        _, sub = stratified_indices(y[train_idx], train_limit, seed + subset_seed_offset)
        train_idx = train_idx[sub]
    if test_limit:
        x_test, y_test = x_test[:test_limit], y_test[:test_limit]
    return Splits(x[train_idx], y[train_idx], x[val_idx], y[val_idx], x_test, y_test, source)


def load(cfg) -> Splits:
    """Load and split Fashion-MNIST as the DataConfig in `cfg.data` says (seed from `cfg.seed`)."""
    x, y, xt, yt, source = load_raw(cfg.data.data_dir, search=cfg.search.fashion_mnist)
    return split(x, y, xt, yt, val_size=cfg.data.val_size, seed=cfg.seed,
                 train_limit=cfg.data.train_limit, test_limit=cfg.data.test_limit, source=source,
                 subset_seed_offset=cfg.seeds.data)


def write_pngs(x: np.ndarray, y: np.ndarray, out_dir: str | Path) -> int:
    """Each image as an 8-bit grayscale PNG in <out_dir>/<class index>_<class name>/<n>.png."""
    from PIL import Image
    out_dir = Path(out_dir)
    for c, name in enumerate(CLASS_NAMES):
        (out_dir / f"{c}_{name.replace('/', '_')}").mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(x, y)):
        Image.fromarray(img, mode="L").save(out_dir / f"{label}_{CLASS_NAMES[label].replace('/', '_')}" / f"{i:05d}.png")
    return len(y)
