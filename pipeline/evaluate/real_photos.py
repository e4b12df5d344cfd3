"""Real phone photos (../shared/real-photos-dev): measured, never trained, calibrated or tuned on.

Accuracy per class, a confusion matrix and a contact sheet (each photo beside the 28×28 image the
model saw and its answer), all through edge_runtime exactly as on a device.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.config import SearchConfig, search_path
from pipeline.release import report
from pipeline.release.provenance import git_commit


def find_dev_set(explicit: str | None = None, search: list[str] | None = None) -> Path | None:
    """The first folder with a MANIFEST.tsv among: `explicit` (--photos), then `search` (default
    `SearchConfig.photos_dev`: $FASHION_EDGE_PHOTOS, ../shared/real-photos-dev)."""
    found = search_path(SearchConfig().photos_dev if search is None else search)
    for folder in ([Path(explicit)] if explicit else []) + [folder for _, folder in found]:
        if (folder / "MANIFEST.tsv").is_file():
            return folder
    return None


def read_dev_set(folder: Path) -> tuple[list[Path], np.ndarray]:
    with open(Path(folder) / "MANIFEST.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [Path(folder) / r["path"] for r in rows], np.array([int(r["class_index"]) for r in rows])


def evaluate(model_path: Path, folder: Path, thresholds=(0.5, 0.7, 0.9), verify: bool = True,
             manifest: dict | None = None) -> dict:
    """Top-1 on the dev photos, per class, confusion, and accuracy/coverage at a few thresholds."""
    paths, y = read_dev_set(folder)
    return {"folder": Path(folder).name,  # its name: the full path is this machine's
            **evaluate_paths(model_path, paths, y, thresholds, verify, manifest)}


def evaluate_paths(model_path: Path, paths: list[Path], y: np.ndarray, thresholds=(0.5, 0.7, 0.9),
                   verify: bool = True, manifest: dict | None = None) -> dict:
    """`evaluate` on any list of photos and their classes."""
    from edge_runtime.classifier import Classifier
    from edge_runtime.decode import load_image
    from edge_runtime.preprocess import to_model_input
    inputs = np.stack([to_model_input(load_image(p)) for p in paths])
    clf = Classifier(str(model_path), verify=verify, manifest=manifest)
    probs = clf.scores(inputs, photos=True)   # as edge-classify scores photos
    pred, conf = probs.argmax(1), probs.max(1)
    classes = sorted(set(y.tolist()))
    m = report.confusion(y, pred)
    return {
        "photos": len(y), "correct": int((pred == y).sum()),
        "accuracy": round(float((pred == y).mean()), 4),
        "per_class": {int(c): {"photos": int((y == c).sum()), "correct": int((pred[y == c] == c).sum())}
                      for c in classes},
        "confusion": m.tolist(),
        "thresholds": [{"threshold": t, "answered": int((conf >= t).sum()),
                        "correct_when_answered": int(((pred == y) & (conf >= t)).sum())} for t in thresholds],
        "_inputs": inputs, "_pred": pred, "_conf": conf, "_y": y, "_paths": paths,
    }


def contact_sheet(result: dict, labels: list[str], path: Path, columns: int = 9) -> None:
    """Each photo beside its 28×28 model input, with the answer (green right, red wrong)."""
    thumb, pad, text_h = 72, 6, 26
    cell_w, cell_h = 2 * thumb + 3 * pad, thumb + text_h + pad
    n = len(result["_paths"])
    rows = (n + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    from edge_runtime.decode import load_image
    for i, p in enumerate(result["_paths"]):
        x0, y0 = (i % columns) * cell_w, (i // columns) * cell_h
        photo = load_image(p).convert("RGB")
        photo.thumbnail((thumb, thumb))
        sheet.paste(photo, (x0 + pad + (thumb - photo.width) // 2, y0 + pad + (thumb - photo.height) // 2))
        model_in = Image.fromarray(result["_inputs"][i]).resize((thumb, thumb), Image.Resampling.NEAREST)
        sheet.paste(model_in.convert("RGB"), (x0 + 2 * pad + thumb, y0 + pad))
        y, pred, conf = int(result["_y"][i]), int(result["_pred"][i]), float(result["_conf"][i])
        ok = y == pred
        draw.text((x0 + pad, y0 + pad + thumb + 1), f"{labels[pred]} {conf:.0%}", fill=(0, 128, 0) if ok else (200, 0, 0))
        if not ok:
            draw.text((x0 + pad, y0 + pad + thumb + 12), f"is {labels[y]}", fill=(90, 90, 90))
    tmp = path.with_name(path.name + ".tmp.png")
    sheet.save(tmp)
    os.replace(tmp, path)


def public(result: dict) -> dict:
    """The result without the arrays, for the manifest."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


def write_minimal_manifest(folder: Path, cfg) -> None:
    """A manifest with just the labels and normalization, so a model that is measured but not shipped
    (written into `folder`) gets the release's input scaling in edge_runtime."""
    from pipeline.release import manifest
    manifest.write(Path(folder), manifest.minimal(cfg))


def measure(out: Path, manifest: dict, dev: Path | None, log, fmnist_only: Path | None = None) -> dict | None:
    """The real-photo stage: model_int8.tflite in `out` on the dev photos, as edge-classify scores photos
    (temperature included), with the contact sheet and the confusion plot written into `out`; and, when the
    release was adapted on real photos, the same figures of the int8 model from before (`fmnist_only`).
    Returns the manifest's "real_photos" (None without dev photos)."""
    if dev is None:
        log("photos", "no real-photos-dev folder found ($FASHION_EDGE_PHOTOS): skipped")
        return None
    before = None
    if fmnist_only is not None:
        before = public(evaluate(fmnist_only, dev, verify=False, manifest=manifest))
        log("photos", f"Fashion-MNIST-only int8 model on the real photos: top-1 {before['accuracy']:.2%}")
    r = evaluate(out / "model_int8.tflite", dev, manifest=manifest)
    log("photos", f"model_int8.tflite on {r['photos']} real photos ({dev}): top-1 {r['accuracy']:.2%}")
    contact_sheet(r, manifest["labels"], out / report.PLOTS_EXTRA["contact_sheet"])
    report.confusion_plot(r["_y"], r["_pred"], out / report.PLOTS_EXTRA["photo_confusion"],
                          title="Confusion matrix (real photos, int8 TFLite)")
    section = {"model": "model_int8.tflite", "conversion_commit": git_commit(), **public(r)}
    if before is not None:
        section["fashion_mnist_only"] = before
    return section
