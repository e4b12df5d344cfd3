"""Promotion: a release is built in a staging folder beside its target and replaces it by rename, only
when it is whole. A failed or killed run leaves the previous release byte-identical."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def _old(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def recover(target: Path) -> None:
    """Undo what a killed run may have left: a half-promoted release or stale staging folders."""
    old = _old(target)
    if old.exists():
        if target.exists():
            shutil.rmtree(old)
        else:
            os.rename(old, target)
    for stale in target.parent.glob(f".{target.name}-staging-*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def staging(target: Path) -> Iterator[Path]:
    """A fresh folder beside `target` (same file system, so `promote` is a rename); removed on the way
    out whatever happens, unless it was promoted."""
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}-staging-", dir=target.parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def promote(staging_dir: Path, target: Path) -> None:
    """Replace `target` with `staging_dir` by two renames; `recover` completes an interrupted swap."""
    old = _old(target)
    if target.exists():
        os.rename(target, old)
    os.rename(staging_dir, target)
    shutil.rmtree(old, ignore_errors=True)
