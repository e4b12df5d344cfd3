"""The importer under fuzzing: damaged .keras, .h5 and SavedModel files end in exit 0 or 2 and one line.

Real files (a Keras 3 .keras, a Keras 3 .h5 with Rescaling, a tf_keras .h5 CNN, a tf_keras SavedModel) are
mutated with a seeded generator: truncated, bytes flipped, zip members removed or swapped, model_config
edited (huge shapes, garbage, wrong types, deep nesting), weights replaced by datasets declaring huge shapes,
saved_model.pb and the variables damaged. Each case runs `python -m pipeline export --keras-model CASE` in a
child process under a time and an address-space limit: a traceback, a signal or a hang is a failure.

Most cases are refused by the scan before TensorFlow is imported (~0.3 s a child); the ones the scan lets
through import TensorFlow (~10 s), so only a few of those run: the seeds are untrained, so a case that loads
stops at the accuracy check (exit 2) instead of exporting. FUZZ_CASES=N runs N cases (default 240).
"""
from __future__ import annotations

import io
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import time
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.errors import ModelError
from pipeline.keras_import import scan

REPO = Path(__file__).resolve().parents[1]
CASES = int(os.environ.get("FUZZ_CASES", "240"))
PAST_SCAN = max(2, CASES // 100)         # cases the scan lets through: each imports TensorFlow
MEMORY = 6 << 30                         # TensorFlow's import alone needs more than 3 GiB of address space
TIMEOUT = 240
TF_LOG = re.compile(r"^(WARNING: All log messages before absl|[IWE]\d{4} \d\d:\d\d:\d\d)")


def _seeds(root: Path) -> dict[str, Path]:
    """Untrained small models in the four formats (untrained: one that loads stops at the accuracy check)."""
    import keras
    import tf_keras
    keras.utils.set_random_seed(0)
    L = keras.layers
    seeds = {}
    keras.Sequential([keras.Input((28, 28)), L.Flatten(), L.Dense(16, activation="relu"),
                      L.Dense(10)]).save(root / "dense.keras")
    seeds["keras3"] = root / "dense.keras"
    keras.Sequential([keras.Input((28, 28, 1)), L.Rescaling(1 / 255), L.Conv2D(4, 3), L.Flatten(),
                      L.Dense(10)]).save(root / "rescaling.h5")
    seeds["keras3-h5"] = root / "rescaling.h5"
    T = tf_keras.layers
    cnn = tf_keras.Sequential([T.InputLayer((28, 28, 1)), T.Conv2D(4, 3, activation="relu"), T.MaxPooling2D(),
                               T.Flatten(), T.Dense(10, activation="softmax")])
    cnn.save(root / "cnn.h5")
    seeds["keras2-h5"] = root / "cnn.h5"
    cnn.save(str(root / "cnn_savedmodel"))
    seeds["keras2-savedmodel"] = root / "cnn_savedmodel"
    return seeds


# --- mutations: (rng, seed path, case path) → writes the case --------------------------------------------

def _flip(data: bytes, rng: random.Random, n: int, lo: int = 0) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        i = rng.randrange(lo, len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def truncate(rng, src, dst):
    data = src.read_bytes()
    dst.write_bytes(data[:rng.randrange(len(data))])


def flip_bytes(rng, src, dst):
    data = src.read_bytes()
    dst.write_bytes(_flip(data, rng, rng.choice([1, 2, 8, 64])))


def _rezip(src, dst, edit):
    with zipfile.ZipFile(src) as z:
        members = {i.filename: z.read(i.filename) for i in z.infolist()}
    members = edit(members)
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def zip_remove_member(rng, src, dst):
    _rezip(src, dst, lambda m: {k: v for k, v in m.items() if k != rng.choice(sorted(m))})


def zip_swap_members(rng, src, dst):
    def edit(m):
        a, b = rng.sample(sorted(m), 2)
        m[a], m[b] = m[b], m[a]
        return m
    _rezip(src, dst, edit)


def _edit_config(config: dict, rng: random.Random):
    """A structurally plausible config with one thing wrong."""
    layers = config.get("config", {}).get("layers", [])
    kind = rng.choice(["huge_shape", "negative_units", "garbage_layers", "unknown_class", "missing_config",
                       "string_units", "deep", "huge_units", "no_layers", "null"])
    if kind == "null":
        return None
    if kind == "deep":
        deep = {}
        for _ in range(150):         # json.dumps itself recurses; 150 × 4 levels is past contents.MAX_DEPTH
            deep = {"class_name": "Dense", "config": {"layers": [deep]}}
        return deep
    if not layers:
        return config
    target = rng.choice(layers)
    cfg = target.setdefault("config", {})
    if kind == "huge_shape":
        key = "batch_shape" if "batch_shape" in json.dumps(layers[0]) else "batch_input_shape"
        layers[0].setdefault("config", {})[key] = [None, 10 ** rng.randrange(5, 13), 28, 1]
    elif kind == "negative_units":
        cfg["units"] = -rng.randrange(1, 1000)
    elif kind == "huge_units":
        cfg["units"] = 10 ** rng.randrange(6, 12)
    elif kind == "garbage_layers":
        config["config"]["layers"] = rng.choice(["x", 3, [1, 2], {"a": 1}])
    elif kind == "unknown_class":
        target["class_name"] = rng.choice(["Dense2", "", "os.system", "Model"])
    elif kind == "missing_config":
        target.pop("config", None)
    elif kind == "string_units":
        cfg["units"] = "ten"
        cfg["kernel_size"] = "3x3"
    elif kind == "no_layers":
        config["config"]["layers"] = []
    return config


def zip_edit_config(rng, src, dst):
    def edit(m):
        if rng.random() < 0.2:
            m["config.json"] = rng.choice([b"{", b"\xff\xfe", b"[]", b"null", b'{"class_name": 1}'])
        else:
            m["config.json"] = json.dumps(_edit_config(json.loads(m["config.json"]), rng)).encode()
        return m
    _rezip(src, dst, edit)


def _huge_weights_h5(rng, data: bytes | None, path_or_buffer):
    """Every weight dataset replaced by one of the same name declaring a huge shape (no data written)."""
    import h5py
    with h5py.File(path_or_buffer, "r+") as h:
        names = []
        h.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for n in names[: max(1, len(names) // 2)]:
            dtype = h[n].dtype
            del h[n]
            h.create_dataset(n, shape=(10 ** rng.randrange(5, 9), 10 ** rng.randrange(3, 6)), dtype=dtype)


def zip_huge_weights(rng, src, dst):
    def edit(m):
        buf = io.BytesIO(m["model.weights.h5"])
        _huge_weights_h5(rng, None, buf)
        m["model.weights.h5"] = buf.getvalue()
        return m
    _rezip(src, dst, edit)


def h5_edit_model_config(rng, src, dst):
    import h5py
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as h:
        if rng.random() < 0.25:
            h.attrs["model_config"] = rng.choice(["{", "garbage", "[]", "null", "\x01" * 10, '{"config": 5}'])
        else:
            h.attrs["model_config"] = json.dumps(_edit_config(json.loads(h.attrs["model_config"]), rng))


def h5_corrupt_attrs(rng, src, dst):
    import h5py
    import numpy as np
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as h:
        kind = rng.choice(["delete_config", "config_as_int", "version", "layer_names", "drop_weights_group"])
        if kind == "delete_config":
            del h.attrs["model_config"]
        elif kind == "config_as_int":
            h.attrs["model_config"] = np.arange(4)
        elif kind == "version":
            h.attrs["keras_version"] = rng.choice(["3.x", "", "99"])
        elif kind == "layer_names":
            h["model_weights"].attrs["layer_names"] = [b"nope"]
        else:
            del h["model_weights"]


def h5_huge_weights(rng, src, dst):
    shutil.copy(src, dst)
    _huge_weights_h5(rng, None, dst)


def _copy_tree(src, dst):
    shutil.copytree(src, dst)
    return dst


def sm_flip_pb(rng, src, dst):
    _copy_tree(src, dst)
    pb = dst / "saved_model.pb"
    pb.write_bytes(_flip(pb.read_bytes(), rng, rng.choice([1, 4, 32])))


def sm_truncate_pb(rng, src, dst):
    _copy_tree(src, dst)
    pb = dst / "saved_model.pb"
    data = pb.read_bytes()
    pb.write_bytes(data[:rng.randrange(len(data))])


def sm_damage_metadata(rng, src, dst):
    _copy_tree(src, dst)
    meta = dst / "keras_metadata.pb"
    data = meta.read_bytes()
    meta.write_bytes(_flip(data, rng, 16) if rng.random() < 0.5 else data[:rng.randrange(len(data))])


def sm_damage_variables(rng, src, dst):
    _copy_tree(src, dst)
    files = sorted((dst / "variables").iterdir())
    f = rng.choice(files)
    if rng.random() < 0.3:
        f.unlink()
    else:
        data = f.read_bytes()
        f.write_bytes(_flip(data, rng, 8) if rng.random() < 0.5 else data[:rng.randrange(max(1, len(data)))])


MUTATIONS = {
    "keras3": [truncate, flip_bytes, zip_remove_member, zip_swap_members, zip_edit_config, zip_edit_config,
               zip_huge_weights],
    "keras3-h5": [truncate, flip_bytes, h5_edit_model_config, h5_edit_model_config, h5_corrupt_attrs, h5_huge_weights],
    "keras2-h5": [truncate, flip_bytes, h5_edit_model_config, h5_edit_model_config, h5_corrupt_attrs, h5_huge_weights],
    "keras2-savedmodel": [sm_flip_pb, sm_truncate_pb, sm_damage_metadata, sm_damage_variables],
}


def _past_scan(path: Path) -> bool:
    """Whether the scan lets the case through (then the child imports TensorFlow); run in this process."""
    try:
        return not scan.scan(path).refused
    except ModelError:
        return False
    except Exception:        # a crash of the scan itself: the child shows it as a traceback
        return False


def _limits():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def _run(case: Path, out: Path) -> tuple[str, str]:
    """('exit 0' | 'exit 2' | 'other: ...', stderr's last line)."""
    cmd = [sys.executable, "-m", "pipeline", "export", "--keras-model", str(case), "--profile", "quick",
           "--test-limit", "200", "--export-dir", str(out / "exported"), "--build-dir", str(out / "build")]
    t0 = time.perf_counter()
    try:
        run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=_limits)
    except subprocess.TimeoutExpired:
        return f"other: no answer in {TIMEOUT} s", ""
    finally:
        if os.environ.get("FUZZ_VERBOSE"):
            print(f"{case.name}: {time.perf_counter() - t0:.1f} s", flush=True)
    lines = [line for line in run.stderr.strip().splitlines() if not TF_LOG.match(line)]
    errors = [line for line in lines if line.startswith("error:")]
    last = lines[-1] if lines else ""
    if "Traceback" in run.stderr:
        return "other: traceback", run.stderr[-2000:]
    if run.returncode == 0:
        return "exit 0", last
    if run.returncode == 2 and len(errors) == 1 and "\n" not in errors[0]:
        return "exit 2", errors[0]
    return f"other: exit {run.returncode}, {len(errors)} error lines", run.stderr[-2000:]


@pytest.mark.slow
def test_damaged_model_files_end_in_exit_0_or_2_and_one_line(tmp_path):
    t0 = time.perf_counter()
    (tmp_path / "seeds").mkdir()
    seeds = _seeds(tmp_path / "seeds")
    rng = random.Random(29)
    cases, through = [], 0
    # A few SavedModel cases (every one imports TensorFlow for the scan); the rest split over .keras and .h5.
    n_savedmodel = max(4, CASES // 60)
    plan = ["keras2-savedmodel"] * n_savedmodel + [rng.choice(["keras3", "keras3-h5", "keras2-h5"])
                                                   for _ in range(CASES - n_savedmodel)]
    attempts = 0
    while len(cases) < CASES and attempts < CASES * 5:
        fmt = plan[len(cases)] if len(cases) < len(plan) else rng.choice(list(MUTATIONS))
        mutate = rng.choice(MUTATIONS[fmt])
        attempts += 1
        src = seeds[fmt]
        dst = tmp_path / "cases" / f"{len(cases):04d}-{mutate.__name__}{src.suffix}"
        dst.parent.mkdir(exist_ok=True)
        mutate(rng, src, dst)
        if fmt != "keras2-savedmodel" and _past_scan(dst):
            if through >= PAST_SCAN:            # loads TensorFlow: only a few of these
                shutil.rmtree(dst, ignore_errors=True) if dst.is_dir() else dst.unlink()
                continue
            through += 1
        cases.append(dst)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda c: (c, *_run(c, tmp_path / "out" / c.name)), cases))
    outcomes = Counter(r[1] if not r[1].startswith("other") else "other" for r in results)
    by_message = Counter(re.sub(r"^error: [^:]+: ", "", r[2])[:70] for r in results if r[1] == "exit 2")
    wall = time.perf_counter() - t0
    print(f"\nfuzz: {len(cases)} cases ({through} past the scan of .keras/.h5, {n_savedmodel} SavedModel) "
          f"in {wall:.0f} s: " + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())))
    for message, n in by_message.most_common(12):
        print(f"  {n:4d} × {message}")
    others = [r for r in results if r[1].startswith("other")]
    for case, what, tail in others[:5]:
        print(f"OTHER {case.name}: {what}\n{tail}")
    assert not others
