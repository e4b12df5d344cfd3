"""pipeline.train.photo_variants and adapt: training photos read from a manifest or class folders, converted by the
runtime and cached, and a quick export that adapts on a small folder made here."""
import json

import numpy as np
import pytest
from PIL import Image

from pipeline import cli
from pipeline.train import photo_variants
from pipeline.errors import DataError


def _photo(garment: np.ndarray, seed: int) -> Image.Image:
    """A dataset garment, dark, on a light noisy floor that reaches every edge."""
    rng = np.random.default_rng(seed)
    floor = rng.integers(160, 235, (150, 200, 3), dtype=np.uint8)
    g = np.asarray(Image.fromarray(255 - garment).resize((110, 110)))
    floor[20:130, 45:155] = np.minimum(floor[20:130, 45:155], g[..., None])
    return Image.fromarray(floor)


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory):
    """DIR/<class>/*.jpg as a user would bring them: 4 photos each of three classes, three folder spellings."""
    from pipeline.data import fashion_mnist
    x, y = fashion_mnist.load_raw()[2:4]
    root = tmp_path_factory.mktemp("mine")
    for name, c in (("Trouser", 1), ("6_Shirt", 6), ("ankle boot", 9)):
        (root / name).mkdir()
        for k, i in enumerate(np.flatnonzero(y == c)[:4]):
            _photo(x[i], k).save(root / name / f"{k}.jpg", quality=90)
    return root


def test_class_folders_are_read_by_class_name(class_folders):
    photos = photo_variants.read(class_folders)
    assert photos.counts() == {"Trouser": 4, "Shirt": 4, "Ankle boot": 4}
    assert len(set(photos.senders)) == 12 and len(photos.manifest_sha256) == 64


def test_a_folder_that_is_no_class_is_named(class_folders, tmp_path):
    bad = tmp_path / "bad"
    (bad / "Hats").mkdir(parents=True)
    with pytest.raises(DataError, match=r"Hats: folder name is not a class"):
        photo_variants.read(bad)
    with pytest.raises(DataError, match="no such folder of training photos"):
        photo_variants.find(str(tmp_path / "missing"))


def test_manifest_folders_keep_senders_and_can_exclude_another_sets_senders(tmp_path, class_folders):
    pool, other = tmp_path / "pool", tmp_path / "other"
    for folder, senders in ((pool, ["a", "b", "c"]), (other, ["b"])):
        (folder / "photos").mkdir(parents=True)
        rows = ["path\tclass_index\tsender_id"]
        for k, s in enumerate(senders):
            Image.open(next((class_folders / "Trouser").glob("*.jpg"))).save(folder / "photos" / f"{k}.jpg")
            rows.append(f"photos/{k}.jpg\t1\t{s}")
        (folder / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    photos = photo_variants.read(pool)
    assert photos.senders == ["a", "b", "c"]
    assert photo_variants.exclude_senders(photos, other).senders == ["a", "c"]
    (pool / "MANIFEST.tsv").write_text("path\tclass_index\tsender_id\nphotos/9.jpg\t1\ta\n")
    with pytest.raises(DataError, match=r"line 2: photos/9.jpg does not exist"):
        photo_variants.read(pool)


def test_variants_are_the_runtimes_conversion_and_are_cached(class_folders, tmp_path):
    from edge_runtime.preprocess import load_image, to_model_input
    photos = photo_variants.read(class_folders)
    x, y, source = photo_variants.variants(photos, 2, 0, tmp_path)
    assert x.shape == (36, 28, 28) and x.dtype == np.uint8 and np.array_equal(np.bincount(source), [3] * 12)
    assert np.array_equal(x[0], to_model_input(load_image(photos.paths[0])))    # variant 0: the photo as it is
    assert not np.array_equal(x[1], x[0])                                       # the others are augmented
    cached = list(tmp_path.glob("photo-variants-*.npz"))
    assert len(cached) == 1
    again = photo_variants.variants(photos, 2, 0, tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip((x, y, source), again))


def test_balanced_weights_lift_rare_classes():
    labels = np.array([0] * 90 + [4] * 10)
    w = photo_variants.balanced_weights(labels, 0.5)
    assert w.sum() == pytest.approx(1.0)
    assert w[labels == 4].sum() == pytest.approx(np.sqrt(10) / (np.sqrt(90) + np.sqrt(10)))
    assert photo_variants.balanced_weights(labels, 0.0)[labels == 4].sum() == pytest.approx(0.5)


@pytest.mark.slow
def test_quick_export_adapts_on_a_photo_folder_and_records_it(quick_release, class_folders, tmp_path, capfd):
    cfg, _, _ = quick_release
    out = tmp_path / "exported"
    code = cli.main(["export", "--profile", "quick", "--build-dir", cfg.build_dir, "--export-dir", str(out),
                     "--photos-train", str(class_folders), "--max-drop-pp", "100", "--min-agreement", "0"])
    assert code == 0
    err = capfd.readouterr().err
    assert "[train] reusing" in err and "[prune] reusing" in err and "[adapt] epoch 1/1" in err
    manifest = json.loads((out / "manifest.json").read_text())
    p = manifest["photos_train"]
    assert p["folder"] == class_folders.name and p["photos"] == 12
    assert p["per_class"] == {"Trouser": 4, "Shirt": 4, "Ankle boot": 4}
    assert p["manifest_sha256"] == photo_variants.read(class_folders).manifest_sha256
    assert p["measured_sparsity"] >= 0.49                       # the masks pruning paid for are kept
    assert "## Adapted on real photos" in (out / "report.md").read_text()
    assert all(a["file"] != "fashion_mnist_only_int8.tflite" for a in manifest["artifacts"])
    assert not (out / "fashion_mnist_only_int8.tflite").exists()


def test_quick_profile_ships_fashion_mnist_only_without_photos_and_says_so(quick_release):
    _, manifest, _ = quick_release
    assert manifest["photos_train"] is None


@pytest.mark.slow
def test_sender_grouped_folds_hold_out_every_photo_once_into_the_report(quick_release, class_folders, tmp_path, capsys):
    import shutil
    cfg, _, root = quick_release
    release = tmp_path / "exported"
    shutil.copytree(root / "exported", release)
    code = cli.main(["compare", "--profile", "quick", "--build-dir", cfg.build_dir, "--export-dir", str(release),
                     "--photo-folds", "2", "--photos-train", str(class_folders)])
    assert code == 0
    text = (release / "photo_folds.md").read_text()
    assert "Sender-grouped 2-fold" in text and "| **all** (balanced accuracy) | 12 |" in text
    assert "## Real photos: sender-grouped cross-validation" in (release / "report.md").read_text()
    for name in ("Trouser", "Shirt", "Ankle boot"):
        assert f"| {name} | 4 |" in text


def test_footwear_pairs_are_two_shoes_side_by_side_converted_by_the_runtime():
    """Synthetic pair photos (pipeline/train/footwear_pairs.py) come out of the runtime's conversion as two light shapes
    side by side, labelled with their footwear class, reproducibly."""
    from pipeline.data import fashion_mnist
    from pipeline.train import footwear_pairs
    from pipeline.config import SeedConfig
    x, y = fashion_mnist.load_raw()[:2]
    seed = 0 + SeedConfig.footwear_pairs     # as a run with seed 0 draws them
    images, labels = footwear_pairs.synthesize(x, y, 12, seed=seed)
    assert images.shape == (36, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [5] * 12 + [7] * 12 + [9] * 12
    again, _ = footwear_pairs.synthesize(x, y, 12, seed=seed)
    assert np.array_equal(images, again)
    # two shoes: light in the left and the right third, and a darker gap between them in most images
    lit = images > 100
    left, middle, right = (lit[:, :, a:b].mean(axis=(1, 2)) for a, b in ((0, 9), (12, 16), (19, 28)))
    assert ((left > 0.05) & (right > 0.05)).mean() > 0.8
    assert (middle < np.minimum(left, right)).mean() > 0.6
