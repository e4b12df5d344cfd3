"""Training-side faults: bad IDX files, a killed export, a full disk. Each gives one clear line and loses nothing."""
import gzip
import hashlib
import os
import resource
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pipeline.data import fashion_mnist
from pipeline.release import promote
from pipeline.errors import DataError

REAL = fashion_mnist.locate()


def _copy_with(tmp_path, key, blob):
    for k, p in REAL.items():
        (tmp_path / p.name).write_bytes(blob if k == key else p.read_bytes())
    return str(tmp_path)


def _error(folder):
    with pytest.raises(DataError) as e:
        fashion_mnist.load_raw(folder)
    return str(e.value)


def _raw(key):
    return gzip.decompress(REAL[key].read_bytes())


def test_wrong_dimensions_name_the_file(tmp_path):
    raw = bytearray(_raw("test_images"))
    raw[12:16] = struct.pack(">I", 27)           # header says 28x27, and the size matches that header
    raw = bytes(raw[:16 + 10000 * 28 * 27])
    msg = _error(_copy_with(tmp_path, "test_images", gzip.compress(raw)))
    assert "t10k-images-idx3-ubyte.gz" in msg and "wrong dimensions" in msg


def test_corrupt_gzip_names_the_file(tmp_path):
    blob = bytearray(REAL["test_labels"].read_bytes())
    blob[len(blob) // 2: len(blob) // 2 + 64] = b"\xff" * 64
    msg = _error(_copy_with(tmp_path, "test_labels", bytes(blob)))
    assert "t10k-labels-idx1-ubyte.gz" in msg and "gzip" in msg


def test_label_count_mismatch_is_a_clear_error(tmp_path):
    labels = np.frombuffer(_raw("test_labels")[8:], np.uint8)[:9999]
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    for k, p in REAL.items():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    fashion_mnist.write_idx(path, labels)
    msg = _error(str(tmp_path))
    assert "t10k-labels-idx1-ubyte.gz" in msg and "9999" in msg
    with pytest.raises(DataError, match="10 images but 9 labels"):
        fashion_mnist.split(np.zeros((10, 28, 28), np.uint8), np.zeros(9, np.uint8), np.zeros((1, 28, 28), np.uint8),
                   np.zeros(1, np.uint8), val_size=0, seed=0)


@settings(max_examples=600, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    # mostly-valid headers with random dims and bodies, to get past the magic check
    st.tuples(st.integers(1, 3), st.lists(st.integers(0, 6), min_size=3, max_size=3), st.binary(max_size=300))
    .map(lambda t: struct.pack(">HBB", 0, 8, t[0]) + struct.pack(f">{t[0]}I", *t[1][:t[0]]) + t[2]),
))
def test_idx_parser_returns_an_array_or_raises_data_error(blob):
    try:
        arr = fashion_mnist.read_idx_bytes(blob, "fuzz")
    except DataError as e:
        assert str(e).startswith("fuzz:")
    else:
        assert arr.dtype == np.uint8 and arr.ndim in (1, 2, 3)


# --- the export: killed mid-write, disk full -----------------------------------------------------

def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def released(quick_release):
    """A quick release in exported/ and a warm stage cache, as a user has after one `make export`."""
    return quick_release[2]


def _export_cmd(root):
    return [sys.executable, "-m", "pipeline", "export", "--profile", "quick", "--build-dir", str(root / "build"),
            "--export-dir", str(root / "exported"), "--max-drop-pp", "100", "--min-agreement", "0",
            "--calibration-size", "60"]      # a new quantization config: the run must write new artifacts


@pytest.mark.slow
def test_sigkill_mid_write_keeps_the_previous_release(released):
    before = _digest(released / "exported")
    proc = subprocess.Popen(_export_cmd(released), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    staged = []
    while time.time() < deadline and proc.poll() is None:
        staged = [p for d in released.glob(".exported-staging-*") for p in d.iterdir()]
        if staged:                                  # artifacts are being written: kill it now
            break
        time.sleep(0.05)
    assert proc.poll() is None, "export finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert staged, "no staged file seen"
    assert _digest(released / "exported") == before
    promote.recover(released / "exported")           # what the next run does first
    assert not list(released.glob(".exported-staging-*"))
    assert _digest(released / "exported") == before


def test_recover_completes_an_interrupted_swap(tmp_path):
    target = tmp_path / "exported"
    target.mkdir()
    (target / "manifest.json").write_text("old")
    os.rename(target, tmp_path / ".exported.old")   # killed between the two renames of `promote`
    promote.recover(target)
    assert (target / "manifest.json").read_text() == "old"


@pytest.mark.slow
def test_disk_full_leaves_no_partial_files(released):
    before = _digest(released / "exported")

    def small_disk():                                # writes past 64 KB fail with EFBIG, like a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    r = subprocess.run(_export_cmd(released), capture_output=True, text=True, preexec_fn=small_disk, timeout=600)
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "too large" in errors[0].lower(), r.stderr[-1500:]
    assert _digest(released / "exported") == before
    assert not list(released.glob(".exported-staging-*"))


@pytest.mark.parametrize("args, message", [
    (["--prune-epochs", "0"], "--prune-epochs must be at least 1 (got 0)"),
    (["--epochs", "0"], "--epochs must be at least 1 (got 0)"),
    (["--target-sparsity", "1.5"], "--target-sparsity must be in [0, 1) (got 1.5)"),
])
def test_unusable_options_are_one_line_and_exit_2_before_training(args, message, tmp_path, capsys):
    from pipeline import cli
    code = cli.main(["export", "--build-dir", str(tmp_path / "build"), "--export-dir", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == f"error: {message}"
    assert not (tmp_path / "build").exists() and not (tmp_path / "out").exists()
