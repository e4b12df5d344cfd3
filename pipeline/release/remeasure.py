"""`python -m pipeline photos`: re-run only the real-photo stage on a release (after a change to the photo
conversion, which does not touch the models): manifest, report and plots are rewritten in a staging copy
that replaces the release by rename, as an export does."""
from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.errors import DataError
from pipeline.evaluate import real_photos
from pipeline.release import manifest, promote, report


def remeasure_photos(target: Path, photos_dir: str | None, log) -> dict:
    """The new manifest's "real_photos" of the release in `target`."""
    target = Path(target)
    promote.recover(target)
    if not (target / manifest.FILE).is_file():
        raise DataError(f"{target / manifest.FILE}: no release here; run `make export` first")
    if photos_dir is not None and not (Path(photos_dir) / "MANIFEST.tsv").is_file():
        raise DataError(f"{photos_dir}: not a real-photos folder (no MANIFEST.tsv in it)")
    dev = real_photos.find_dev_set(photos_dir)
    if dev is None:
        raise DataError("no real-photos-dev folder (with a MANIFEST.tsv): give --photos DIR or set $FASHION_EDGE_PHOTOS")
    with promote.staging(target) as staging:
        shutil.copytree(target, staging, dirs_exist_ok=True)
        m = manifest.read(staging)
        manifest.update(m, real_photos=real_photos.measure(staging, m, dev, log))
        plots = {k: staging / v for k, v in {**report.PLOTS, "reliability": report.PLOTS_EXTRA["reliability"]}.items()
                 if (staging / v).exists()}
        report.write_report(staging, m, plots)
        manifest.write(staging, m)
        promote.promote(staging, target)
    return m["real_photos"]
