"""Real photos to train on: found, read, augmented at the photo level and converted by the runtime.

A training folder is either like ../shared/real-photos-train (a MANIFEST.tsv with `path`, `class_index`
and optionally `sender_id`) or plain `DIR/<class name>/*.jpg`, so users can bring their own (the class
folder may also carry the index, as ours do: `6_Shirt`). Every photo is augmented the way phone photos
differ from each other (crop and scale, rotation, flip, colour, lighting, blur, JPEG) and then goes
through `edge_runtime.preprocess.to_model_input`, exactly what the device will feed the model. The
converted 28×28 variants are cached under build/ (keyed by the files, the settings and the source of
the conversion), so no cut-out runs inside the training loop.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from pipeline.config import SearchConfig, search_path
from pipeline.data.fashion_mnist import CLASS_NAMES
from pipeline.errors import DataError


@dataclass
class PhotoSet:
    """Photos with their class and (when the manifest says) who sent them."""

    folder: Path
    paths: list[Path]
    labels: np.ndarray
    senders: list[str]
    manifest_sha256: str
    found_by: str | None = None       # the flag or `search.photos_train` entry that named the folder

    def counts(self) -> dict[str, int]:
        return {CLASS_NAMES[c]: int((self.labels == c).sum()) for c in sorted(set(self.labels.tolist()))}

    def subset(self, keep: np.ndarray) -> "PhotoSet":
        keep = np.asarray(keep, bool)
        return PhotoSet(self.folder, [p for p, k in zip(self.paths, keep) if k], self.labels[keep],
                        [s for s, k in zip(self.senders, keep) if k], self.manifest_sha256, self.found_by)


def find(explicit: str | None = None, search: list[str] | None = None) -> tuple[Path, str] | None:
    """(training folder, what named it): `explicit` (must exist; "--photos-train"), else the first folder of
    `search` (default `SearchConfig.photos_train`: $FASHION_EDGE_PHOTOS_TRAIN, ../shared/real-photos-train)
    that exists; None when there is none."""
    if explicit:
        if not Path(explicit).is_dir():
            raise DataError(f"{explicit}: no such folder of training photos (--photos-train)")
        return Path(explicit), "--photos-train"
    for entry, folder in search_path(SearchConfig().photos_train if search is None else search):
        if folder.is_dir():
            return folder, entry
    return None


def _class_of_folder(name: str) -> int | None:
    """'Shirt', 'shirt', '6_Shirt', 'T-shirt_top', 'T-shirt-top' → the class index; None if no class."""
    def norm(s: str) -> str:
        return re.sub(r"[^a-z0-9]", "", s.lower())
    stripped = re.sub(r"^\d+[_-]", "", name)
    by_name = {norm(c): i for i, c in enumerate(CLASS_NAMES)}
    return by_name.get(norm(stripped))


def read(folder: Path) -> PhotoSet:
    """A MANIFEST.tsv folder or DIR/<class name>/*.jpg; DataError naming the file or folder at fault."""
    from edge_runtime.decode import IMAGE_EXTENSIONS
    folder = Path(folder)
    manifest = folder / "MANIFEST.tsv"
    if manifest.is_file():
        blob = manifest.read_bytes()
        rows = list(csv.DictReader(io.StringIO(blob.decode("utf-8")), delimiter="\t"))
        if not rows or not {"path", "class_index"} <= set(rows[0]):
            raise DataError(f"{manifest}: expected tab-separated columns path and class_index")
        paths, labels, senders = [], [], []
        for i, r in enumerate(rows, start=2):
            label = int(r["class_index"]) if r["class_index"].isdigit() else -1
            if not 0 <= label < len(CLASS_NAMES):
                raise DataError(f"{manifest}: line {i}: class_index {r['class_index']!r} is not 0..9")
            path = folder / r["path"]
            if not path.is_file():
                raise DataError(f"{manifest}: line {i}: {r['path']} does not exist")
            paths.append(path)
            labels.append(label)
            senders.append(r.get("sender_id") or f"file:{r['path']}")
        return PhotoSet(folder, paths, np.array(labels), senders, hashlib.sha256(blob).hexdigest())
    paths, labels, listing = [], [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = _class_of_folder(sub.name)
        if label is None:
            raise DataError(f"{sub}: folder name is not a class ({', '.join(CLASS_NAMES)})")
        for path in sorted(p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()):
            paths.append(path)
            labels.append(label)
            listing.append(f"{path.relative_to(folder)}\t{label}\t{path.stat().st_size}")
    if not paths:
        raise DataError(f"{folder}: no MANIFEST.tsv and no images in class folders (e.g. {folder}/Shirt/*.jpg)")
    digest = hashlib.sha256("\n".join(listing).encode()).hexdigest()
    # Without a manifest nobody is known to have sent two photos: each photo is its own sender.
    return PhotoSet(folder, paths, np.array(labels), [f"file:{p}" for p in listing], digest)


def load(cfg) -> PhotoSet | None:
    """The training photos `cfg.photos_train` asks for (its folder, or when `auto` the search path),
    without the senders of `exclude_senders_of`; None when there are none to use."""
    a = cfg.photos_train
    found = find(a.dir, cfg.search.photos_train) if a.dir or a.auto else None
    if found is None:
        return None
    photos = read(found[0])
    photos.found_by = found[1]
    if a.exclude_senders_of:
        photos = exclude_senders(photos, Path(a.exclude_senders_of))
    return photos


def why_none(cfg) -> str:
    """Why `load(cfg)` found no photos to adapt on, for the log."""
    if cfg.photos_train.auto:
        return "no real-photos-train folder (--photos-train, $FASHION_EDGE_PHOTOS_TRAIN, ../shared/real-photos-train)"
    if cfg.keras_model.path:
        return "an imported model is adapted on real photos only when --photos-train names a folder"
    return "training photos not looked for (--no-photos-train, or the profile)"


def describe(photos: PhotoSet, info: dict) -> dict:
    """What the release learnt from, for the manifest: the folder and what found it, count per class, its
    manifest's sha256."""
    return {"folder": photos.folder.name, "found_by": photos.found_by, "photos": len(photos.paths), "per_class": photos.counts(),
            "senders": len(set(photos.senders)), "manifest_sha256": photos.manifest_sha256,
            **{k: v for k, v in info.items() if k != "history"}}


def exclude_senders(photos: PhotoSet, other: Path) -> PhotoSet:
    """`photos` without those whose sender_id appears in `other`'s MANIFEST.tsv (sender-disjoint figures)."""
    taken = {s for s in read(other).senders if not s.startswith("file:")}
    return photos.subset(np.array([s not in taken for s in photos.senders]))


# --- photo-level augmentation -----------------------------------------------------------------------

def augment(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One random variant of a phone photo: what another shot of the same garment could look like."""
    img = img.convert("RGB")
    w, h = img.size
    # Crop and scale: keep 75–100 % of each side, or zoom out by extending the border (a garment
    # smaller in the frame), then rotate a little.
    if rng.random() < 0.7:
        cw, ch = int(w * rng.uniform(0.75, 1.0)), int(h * rng.uniform(0.75, 1.0))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = img.crop((x0, y0, x0 + cw, y0 + ch))
    else:
        pad = int(max(w, h) * rng.uniform(0.05, 0.25))
        img = Image.fromarray(np.pad(np.asarray(img), ((pad, pad), (pad, pad), (0, 0)), mode="reflect"))
    border = tuple(int(v) for v in np.median(np.concatenate(
        [np.asarray(img)[[0, -1]].reshape(-1, 3), np.asarray(img)[:, [0, -1]].reshape(-1, 3)]), axis=0))
    img = img.rotate(float(rng.uniform(-20, 20)), Image.Resampling.BILINEAR, fillcolor=border)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    # Colour and lighting.
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.5, 1.5))
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.7, 1.3))
    if rng.random() < 0.3:
        gamma = rng.uniform(0.7, 1.4)
        img = img.point([round(255 * (i / 255) ** gamma) for i in range(256)] * 3)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.5:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(30, 91)))
        img = Image.open(io.BytesIO(buf.getvalue()))
        img.load()
    return img


def _conversion_digest() -> str:
    """The photo decoding's and conversion's own source: a change to either makes every cached variant stale."""
    import edge_runtime.decode as dec
    import edge_runtime.preprocess as pre
    return hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in (dec, pre))).hexdigest()[:12]


def variants(photos: PhotoSet, n: int, seed: int, cache_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (P·(n+1), 28, 28) uint8, labels, index of the source photo): each photo converted as it is
    and in `n` augmented variants, all by the runtime's conversion; cached in `cache_dir`."""
    from edge_runtime.decode import load_image
    from edge_runtime.preprocess import to_model_input
    key = hashlib.sha256(f"{photos.manifest_sha256}|{len(photos.paths)}|{n}|{seed}|{_conversion_digest()}|"
                         f"{'|'.join(map(str, photos.paths))}".encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"photo-variants-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["x"], z["y"], z["source"]
    t0 = time.perf_counter()
    xs, ys, src = [], [], []
    for i, (p, label) in enumerate(zip(photos.paths, photos.labels)):
        photo = load_image(p)
        rng = np.random.default_rng([seed, i])
        for v in range(n + 1):
            xs.append(to_model_input(photo if v == 0 else augment(photo, rng)))
            ys.append(label)
            src.append(i)
        if (i + 1) % 100 == 0:
            print(f"  [photos] {i + 1}/{len(photos.paths)} photos converted ({n + 1} variants each)",
                  file=sys.stderr, flush=True)
    x, y, source = np.stack(xs), np.array(ys, np.int64), np.array(src, np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, x=x, y=y, source=source)
    os.replace(tmp, path)
    print(f"  [photos] {len(x)} variants of {len(photos.paths)} photos in {time.perf_counter() - t0:.0f} s → {path}",
          file=sys.stderr, flush=True)
    return x, y, source


def balanced_weights(labels: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Sampling weight per image: classes drawn in proportion to count**power (0 = equal per class,
    1 = as found), so 280 T-shirts do not drown 7 coats, nor 7 coats get repeated 40 times."""
    counts = np.bincount(labels, minlength=len(CLASS_NAMES)).astype(np.float64)
    per_class = np.where(counts > 0, counts ** power / np.maximum(counts, 1), 0.0)
    w = per_class[labels]
    return w / w.sum()
