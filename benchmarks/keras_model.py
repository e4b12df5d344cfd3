"""The float Keras model a release was converted from (information: Keras predict ÷ the edge runtime, its MACs
counted from the layers, its cold start with TensorFlow). The only benchmark module that imports TensorFlow."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline import TF_ENV

from .common import ROOT, run_json, show


def pin_tensorflow_threads() -> bool:
    """One intra-op and one inter-op thread; False if TensorFlow was already initialized (threads as they are)."""
    import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        return True
    except RuntimeError:
        return False


def layer_macs(model) -> int:
    """Multiply-accumulates per image, counted from the Keras model's layers."""
    from pipeline.train import models
    return int(models.macs(model))


def _same_training(cached: dict, wanted: dict) -> bool:
    """Whether a build/ cache entry was made from the release's seed, data, training and pruning settings."""
    def key(c):
        data = {k: v for k, v in c.get("data", {}).items() if k not in ("data_dir", "test_limit")}
        return c.get("seed"), data, c.get("train"), c.get("prune")
    return key(cached) == key(wanted)


def build_dirs(manifest: dict, release: Path | None = None, build_dir: Path | None = None) -> list[Path]:
    """Where the release's cached Keras model may be: `build_dir` if given, else the manifest's build
    folder (a relative one beside the release folder, or in the repository) and build/."""
    if build_dir is not None:
        return [Path(build_dir)]
    recorded = Path(manifest.get("config", {}).get("build_dir") or "build")
    bases = [Path(release).resolve().parent] if release is not None else []
    dirs = [recorded] if recorded.is_absolute() else [base / recorded for base in [*bases, ROOT]]
    return list(dict.fromkeys(d.resolve() for d in [*dirs, ROOT / "build"]))


def load_keras(manifest: dict, release: Path | None = None, build_dir: Path | None = None):
    """(model, source): the release's pruned float model from build/prune-*/ if cached, else the same
    architecture with untrained weights (latency and MACs are the same; accuracy is not measured here)."""
    import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
    import tf_keras as keras
    from pipeline.train import models

    cfg = manifest.get("config", {})
    arch = cfg.get("train", {}).get("model", "compact")
    params = manifest.get("float_reference", {}).get("params")
    found = []  # (other configuration?, -mtime, path): this release's own model first, newest first
    for d in build_dirs(manifest, release, build_dir):
        for h5 in d.glob("prune-*/model.h5"):
            try:
                cached = json.loads((h5.parent / "config.json").read_text())
            except (OSError, ValueError):
                continue
            if cached.get("train", {}).get("model") == arch:
                found.append((not _same_training(cached, cfg), -h5.stat().st_mtime, h5))
    for other, _, h5 in sorted(found):
        model = keras.models.load_model(h5, compile=False)
        if params is not None and model.count_params() != params:
            continue
        how = "trained weights of another configuration, same architecture" if other else "this release's weights"
        return model, f"{show(h5)} ({how})"
    return models.build(arch), (f"pipeline.train.models.build({arch!r}) with untrained weights: no build/prune-*/model.h5 "
                                "of this architecture; latency and MACs are the same as the trained model's")


def keras_runner(model, mean: float, std: float, batch: np.ndarray) -> Callable[[], np.ndarray]:
    """`model.predict` on uint8 images, standardizing first, as the pipeline does."""
    def run():
        x = ((batch.astype(np.float32) / 255.0 - mean) / std)[..., None]
        return model.predict(x, batch_size=len(batch), verbose=0)
    return run


_KERAS_COLD = r"""
import time
t0 = time.perf_counter()
import json, sys
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
import tf_keras as keras
t_import = time.perf_counter()
model = keras.models.load_model(sys.argv[1], compile=False)
t_load = time.perf_counter()
mean, std = float(sys.argv[2]), float(sys.argv[3])
prep = lambda x: ((x.astype(np.float32) / 255.0 - mean) / std)[..., None]
model.predict(prep(np.zeros((1, 28, 28), np.uint8)), verbose=0)
t_first = time.perf_counter()
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({"import_s": t_import - t0, "load_s": t_load - t_import, "cold_start_s": t_first - t0,
                  "peak_rss_bytes": int(status["VmHWM"].split()[0]) * 1024}))
"""


def cold_start_keras(h5: Path, mean: float, std: float, repeats: int = 3) -> dict:
    """TensorFlow import + load_model + first predict in a fresh process (median of `repeats`), and its peak RSS."""
    import os
    env = {**os.environ, **TF_ENV}
    runs = [run_json([sys.executable, "-c", _KERAS_COLD, str(h5), str(mean), str(std)], env,
                     "cold start of the Keras model") for _ in range(repeats)]
    return {k: float(np.median([r[k] for r in runs])) for k in ("import_s", "load_s", "cold_start_s", "peak_rss_bytes")}

