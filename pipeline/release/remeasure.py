"""Re-run one measuring stage on a release, without converting anything: `python -m pipeline photos` (the real
photos, after a change to the photo conversion) and `python -m pipeline mcu` (TensorFlow Lite Micro, for a release
exported before the MCU stage existed). Manifest, report and plots are rewritten in a staging copy that replaces
the release by rename, as an export does."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from pipeline.errors import DataError
from pipeline.evaluate import real_photos
from pipeline.release import manifest, promote, report


def _remeasure(target: Path, section: str, measure: Callable[[Path, dict], dict | None]) -> dict:
    """`measure(staging, manifest)` into the manifest's `section` of the release in `target`; the new manifest."""
    target = Path(target)
    promote.recover(target)
    if not (target / manifest.FILE).is_file():
        raise DataError(f"{target / manifest.FILE}: no release here; run `make export` first")
    with promote.staging(target) as staging:
        shutil.copytree(target, staging, dirs_exist_ok=True)
        m = manifest.read(staging)
        manifest.update(m, **{section: measure(staging, m)})
        plots = {k: staging / v for k, v in {**report.PLOTS, "reliability": report.PLOTS_EXTRA["reliability"]}.items()
                 if (staging / v).exists()}
        report.write_report(staging, m, plots)
        manifest.write(staging, m)
        promote.promote(staging, target)
    return m


def remeasure_photos(target: Path, photos_dir: str | None, log) -> dict:
    """The new manifest's "real_photos" of the release in `target`."""
    if photos_dir is not None and not (Path(photos_dir) / "MANIFEST.tsv").is_file():
        raise DataError(f"{photos_dir}: not a real-photos folder (no MANIFEST.tsv in it)")
    dev = real_photos.find_dev_set(photos_dir)
    if dev is None:
        raise DataError("no real-photos-dev folder (with a MANIFEST.tsv): give --photos DIR or set $FASHION_EDGE_PHOTOS")
    return _remeasure(target, "real_photos", lambda staging, m: real_photos.measure(staging, m, dev, log))["real_photos"]


def remeasure_mcu(target: Path, require: bool, log) -> dict:
    """The new manifest's "mcu" of the release in `target`, on as many test images as the release was gated on."""
    from pipeline.data import fashion_mnist
    from pipeline.mcu import microcontroller

    def measure(staging: Path, m: dict) -> dict:
        _, _, x_test, y_test, _ = fashion_mnist.load_raw()
        n = int(m.get("test_images", len(y_test)))
        min_agreement = m.get("config", {}).get("mcu", {}).get("min_agreement", 0.999)
        return microcontroller.check_release(staging, m, x_test[:n], y_test[:n], min_agreement, require, log)

    return _remeasure(target, "mcu", measure)["mcu"]
