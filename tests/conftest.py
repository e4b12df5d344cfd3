import os

# Before anything imports TensorFlow: tfmot needs Keras 2, and there is no GPU to probe.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def quick_release(tmp_path_factory):
    """One quick export (subset, 1 epoch) shared by the tests that need a release and a warm stage cache.

    A 1-epoch model is far from converged, so int8 rounding flips more answers than on a trained
    one: its gate is loosened; the gate's own behaviour is tested with the default thresholds.
    """
    from pipeline import export
    from pipeline.config import make_config
    root = tmp_path_factory.mktemp("release")
    cfg = make_config("quick", build_dir=str(root / "build"), export_dir=str(root / "exported"),
                      **{"gate.max_drop_pp": 100.0, "gate.min_agreement": 0.0})
    manifest = export.run(cfg)
    return cfg, manifest, root


@pytest.fixture(scope="session")
def phone_photos(tmp_path_factory):
    """Phone-sized JPEGs (12, 108 and 200 Mpx) of one scene, and files to refuse (tests/phone_photos.py),
    written once per session by a process of their own."""
    try:
        import phone_photos as maker
    except ImportError:  # tests/ collected as a package
        from tests import phone_photos as maker
    return maker.make_all(tmp_path_factory.mktemp("phone-photos"))


@pytest.fixture(scope="session")
def heic_files(phone_photos, tmp_path_factory):
    """The phone photos' scene at 800×600 as a JPEG, and as HEICs made from it (pillow-heif, the heic extra):
    with a 320-px thumbnail, as an iPhone writes them, and without one."""
    pillow_heif = pytest.importorskip("pillow_heif", reason="the heic extra (make test installs it)")
    try:
        import phone_photos as maker
    except ImportError:  # tests/ collected as a package
        from tests import phone_photos as maker
    pillow_heif.register_heif_opener()
    root = tmp_path_factory.mktemp("heic")
    photo = maker.scene().resize((800, 600))
    photo.save(root / "photo.jpg", quality=90)
    photo.save(root / "thumbnail.heic", quality=90, thumbnails=[320])
    photo.save(root / "plain.heic", quality=90, thumbnails=[])
    return root
