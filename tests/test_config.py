"""The one Config and what the package finds by path: the checkout, the search paths, the files shipped
beside modules (and inside a non-editable install), the TensorFlow environment."""
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import pipeline
from pipeline import config
from pipeline.config import SearchConfig, make_config, search_path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def test_repo_is_the_checkout_the_package_sits_in():
    assert config.REPO == ROOT and (config.REPO / "pyproject.toml").is_file()


@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared beside this checkout")
def test_real_photo_search_finds_the_shared_folders_beside_the_checkout(monkeypatch):
    from pipeline.evaluate import real_photos
    from pipeline.train import photo_variants
    monkeypatch.delenv("FASHION_EDGE_PHOTOS", raising=False)
    monkeypatch.delenv("FASHION_EDGE_PHOTOS_TRAIN", raising=False)
    assert real_photos.find_dev_set() == SHARED / "real-photos-dev"
    assert photo_variants.find() == (SHARED / "real-photos-train", "../shared/real-photos-train")
    photos = photo_variants.load(make_config("default"))
    assert photo_variants.describe(photos, {})["found_by"] == "../shared/real-photos-train"


def test_search_path_reads_variables_skips_unset_ones_and_roots_relative_paths_at_the_checkout(monkeypatch, tmp_path):
    monkeypatch.setenv("FE_TEST_DIR", str(tmp_path))
    monkeypatch.delenv("FE_TEST_UNSET", raising=False)
    assert search_path(["$FE_TEST_UNSET", "$FE_TEST_DIR", "../x", "/abs", "~/y"]) == [
        ("$FE_TEST_DIR", tmp_path), ("../x", ROOT.parent / "x"), ("/abs", Path("/abs")), ("~/y", Path.home() / "y")]


def test_an_explicit_folder_comes_before_the_search(monkeypatch, tmp_path):
    from pipeline.evaluate import real_photos
    (tmp_path / "MANIFEST.tsv").write_text("path\tclass_index\n")
    monkeypatch.setenv("FASHION_EDGE_PHOTOS", "/nowhere")
    assert real_photos.find_dev_set(str(tmp_path)) == tmp_path
    assert real_photos.find_dev_set(None, ["/nowhere", str(tmp_path)]) == tmp_path


def test_search_paths_and_seed_offsets_are_written_into_the_manifest_config():
    d = make_config("default").to_dict()
    assert d["search"] == {"fashion_mnist": SearchConfig().fashion_mnist, "photos_dev": SearchConfig().photos_dev,
                           "photos_train": SearchConfig().photos_train}
    assert d["seeds"] == {"data": 1, "prune": 1, "adapt": 2, "representative": 2, "footwear_pairs": 7}


def test_a_changed_seed_offset_makes_a_new_cache_key_and_the_default_none():
    from pipeline.train import fit, prune
    cfg = make_config("default")
    moved = make_config("default", **{"seeds.data": 5, "seeds.prune": 3})
    assert fit.cache_key(moved) != fit.cache_key(cfg)
    assert prune.cache_key(moved, "k") != prune.cache_key(cfg, "k")


def test_files_found_beside_their_modules_exist():
    from pipeline.bundle import tarball
    from pipeline.compat import clients
    assert clients.CLIENT_SCRIPT == ROOT / "pipeline" / "compat" / "client_script.py" and clients.CLIENT_SCRIPT.is_file()
    assert tarball.INSTALL_SCRIPT.is_file()


def test_the_makefile_exports_the_packages_tensorflow_environment():
    exported = dict(re.findall(r"^export (TF_\w+|CUDA_VISIBLE_DEVICES) := (\S+)", (ROOT / "Makefile").read_text(), re.M))
    assert exported == pipeline.TF_ENV
    assert os.environ["TF_USE_LEGACY_KERAS"] == "1"          # set by conftest's `import pipeline`


@pytest.mark.slow
def test_a_built_wheel_carries_install_sh_and_the_compat_client(tmp_path):
    """A non-editable install has no checkout: the files found by sibling path must be package data."""
    src = tmp_path / "src"         # a copy: setuptools writes build/ and *.egg-info beside the sources
    for name in ("pyproject.toml", "README.md"):
        src.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, src / name)
    for package in ("pipeline", "edge_runtime"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("fashion_edge-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"pipeline/bundle/install.sh", "pipeline/compat/client_script.py", "edge_runtime/labels.py"} <= names
