"""IDX loading, validation, checksums, search order and the stratified split, on real files."""
import gzip
import subprocess
import sys

import numpy as np
import pytest

from pipeline.data import fashion_mnist
from pipeline.errors import DataError


def test_idx_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    for suffix in (".gz", ""):
        fashion_mnist.write_idx(tmp_path / f"im{suffix}", images)
        fashion_mnist.write_idx(tmp_path / f"lb{suffix}", labels)
        assert np.array_equal(fashion_mnist.read_idx(tmp_path / f"im{suffix}"), images)
        assert np.array_equal(fashion_mnist.read_idx(tmp_path / f"lb{suffix}"), labels)


def _official_copy(tmp_path, mutate=None):
    """The four real files copied into tmp_path, one of them optionally damaged."""
    for spec in fashion_mnist.FILES.values():
        src = fashion_mnist.locate()[next(k for k, s in fashion_mnist.FILES.items() if s is spec)]
        blob = src.read_bytes()
        if mutate and spec.name == "train-images-idx3-ubyte.gz":
            blob = mutate(blob)
        (tmp_path / spec.name).write_bytes(blob)
    return tmp_path


def _load_error(folder) -> str:
    with pytest.raises(DataError) as e:
        fashion_mnist.load_raw(str(folder))
    return str(e.value)


# compresslevel=1: the files are 26 MB; gzip's default level 9 took ~20 s per test for the same bytes inside.
def test_truncated_idx_file_names_the_file(tmp_path):
    raw = gzip.decompress(fashion_mnist.locate()["train_images"].read_bytes())
    msg = _load_error(_official_copy(tmp_path, lambda b: gzip.compress(raw[: len(raw) // 2], compresslevel=1)))
    assert "train-images-idx3-ubyte.gz" in msg and "truncated" in msg


def test_truncated_gzip_stream_names_the_file(tmp_path):
    msg = _load_error(_official_copy(tmp_path, lambda b: b[: len(b) // 3]))
    assert "train-images-idx3-ubyte.gz" in msg and "truncated gzip" in msg


def test_wrong_magic_names_the_file(tmp_path):
    raw = gzip.decompress(fashion_mnist.locate()["train_images"].read_bytes())
    msg = _load_error(_official_copy(tmp_path, lambda b: gzip.compress(b"\x00\x00\x08\x01" + raw[4:], compresslevel=1)))
    assert "train-images-idx3-ubyte.gz" in msg and "magic" in msg


def test_wrong_checksum_names_the_file(tmp_path):
    raw = bytearray(gzip.decompress(fashion_mnist.locate()["train_images"].read_bytes()))
    raw[5000] ^= 0xFF                     # one flipped pixel: structurally valid, not Fashion-MNIST
    msg = _load_error(_official_copy(tmp_path, lambda b: gzip.compress(bytes(raw), compresslevel=1)))
    assert "train-images-idx3-ubyte.gz" in msg and "checksum" in msg


def test_empty_file_names_the_file(tmp_path):
    msg = _load_error(_official_copy(tmp_path, lambda b: b""))
    assert "train-images-idx3-ubyte.gz" in msg and "empty" in msg


def test_missing_file_in_explicit_dir_is_an_error_not_a_fallback(tmp_path):
    msg = _load_error(tmp_path)
    assert str(tmp_path) in msg and "missing" in msg


def test_env_var_is_searched_before_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    assert fashion_mnist.candidate_dirs()[0] == tmp_path
    assert fashion_mnist.candidate_dirs("/x")[0].as_posix() == "/x"


def test_cli_prints_one_line_and_exits_2_on_a_truncated_file(tmp_path):
    _official_copy(tmp_path, lambda b: b[: len(b) // 2])
    r = subprocess.run([sys.executable, "-m", "pipeline", "train", "--data-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "train-images-idx3-ubyte.gz" in errors[0]


def test_real_data_loads_with_official_shapes():
    x, y, xt, yt, _ = fashion_mnist.load_raw()
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert np.bincount(y).tolist() == [6000] * 10 and np.bincount(yt).tolist() == [1000] * 10


def test_stratified_split_has_500_per_class_and_is_seeded():
    x, y, xt, yt, _ = fashion_mnist.load_raw()
    s1 = fashion_mnist.split(x, y, xt, yt, val_size=5000, seed=0)
    s2 = fashion_mnist.split(x, y, xt, yt, val_size=5000, seed=0)
    assert np.bincount(s1.y_val).tolist() == [500] * 10
    assert len(s1.y_train) == 55000
    assert np.array_equal(s1.y_val, s2.y_val) and np.array_equal(s1.x_val, s2.x_val)
    s3 = fashion_mnist.split(x, y, xt, yt, val_size=5000, seed=1)
    assert not np.array_equal(s1.x_val, s3.x_val)
