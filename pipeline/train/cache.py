"""The stage cache under build/: a trained, pruned or adapted model is kept under a key of exactly what it
depends on, so a run that changes only later settings (the gate, the export) reuses it instead of training."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Callable


def stage_key(*parts) -> str:
    """Short stable hash of the config sections a cached stage depends on."""
    blob = json.dumps([dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build_path(cfg, stage: str, key: str) -> Path:
    """The folder of one cached stage: build/<stage>-<key>."""
    return Path(cfg.build_dir) / f"{stage}-{key}"


def save(model, info: dict, cfg, out_dir: Path) -> None:
    """Model (.h5), its history or stage info and the config into `out_dir`, written then renamed."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save(tmp / "model.h5", include_optimizer=False)
    (tmp / "history.json").write_text(json.dumps(info, indent=1))
    (tmp / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


def load_saved(out_dir: Path):
    """(model, history or stage info) of a folder `save` wrote."""
    import tf_keras as keras
    model = keras.models.load_model(Path(out_dir) / "model.h5", compile=False)
    info = json.loads((Path(out_dir) / "history.json").read_text())
    return model, info


def reuse_or_compute(cfg, stage: str, key: str, compute: Callable[[], tuple]) -> tuple:
    """(model, info, folder): the model cached for `stage` under `key`, or `compute()`'s, saved there first."""
    out = build_path(cfg, stage, key)
    if (out / "model.h5").is_file():
        print(f"  [{stage}] reusing {out}", file=sys.stderr)
        model, info = load_saved(out)
        return model, info, out
    model, info = compute()
    save(model, info, cfg, out)
    return model, info, out


def changed_seeds(cfg, *names: str) -> tuple:
    """The named `cfg.seeds` offsets that differ from their defaults, as one key part, or none: a key made
    before the offsets were settings stays the same, and a changed offset still makes a new one."""
    from pipeline.config import SeedConfig
    changed = {n: getattr(cfg.seeds, n) for n in names if getattr(cfg.seeds, n) != getattr(SeedConfig(), n)}
    return (changed,) if changed else ()
