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
