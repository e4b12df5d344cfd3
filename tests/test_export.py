"""Quick real exports (profile quick): all artifacts, matching sha256s, a gate, and no promotion on failure."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import cli
from pipeline import export
from pipeline.quantize import representative
from pipeline.config import make_config

pytestmark = pytest.mark.slow
FILES = ["model_float.tflite", "model_int8.tflite", "model_float.onnx", "model_int8.onnx", "model_int8_rgb.tflite",
         "labels.txt", "manifest.json", "report.md"]


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def quick(quick_release):
    cfg, manifest, root = quick_release
    return cfg, manifest, root / "exported"


def test_quick_export_writes_every_artifact_with_matching_sha256(quick):
    cfg, manifest, out = quick
    for name in FILES:
        assert (out / name).is_file(), name
    assert len(manifest["artifacts"]) == 5
    on_disk = json.loads((out / "manifest.json").read_text())
    for a in on_disk["artifacts"]:
        blob = (out / a["file"]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == a["sha256"]
        assert len(blob) == a["bytes"]
        assert a["accuracy"] > 0.7, a["file"]          # a trained model (measured 79.5 %; chance is 10 %)
        assert len(a["per_class_accuracy"]) == 10
    # passed under a gate a broken int8 conversion fails (conftest.QUICK_GATE), not a loosened one
    assert on_disk["gate"]["passed"] is True
    assert (on_disk["gate"]["max_drop_pp"], on_disk["gate"]["min_agreement"]) == (1.0, 0.98)
    assert on_disk["input"]["normalization"] == {"mean": cfg.data.mean, "std": cfg.data.std}
    i8 = next(a for a in on_disk["artifacts"] if a["file"] == "model_int8.tflite")
    assert i8["input"]["dtype"] == "int8" and i8["output"]["dtype"] == "int8"
    assert i8["bytes"] < next(a for a in on_disk["artifacts"] if a["file"] == "model_float.tflite")["bytes"] / 3
    assert on_disk["pruning"]["measured_sparsity"] >= 0.49
    # pruning pays off once compressed: the float model before pruning compresses worse
    assert on_disk["pruning"]["kernel_gzip_bytes_after"] < 0.8 * on_disk["pruning"]["kernel_gzip_bytes_before"]
    fl = next(a for a in on_disk["artifacts"] if a["file"] == "model_float.tflite")
    assert fl["gzip_bytes"] < on_disk["sizes"]["unpruned_float_tflite"]["gzip_bytes"]
    assert not list(out.parent.glob(".exported-staging-*"))


def test_float_artifacts_agree_with_keras(quick):
    _, manifest, _ = quick
    for a in manifest["artifacts"]:
        if a["precision"] == "float32":
            assert a["agreement_with_float"] >= 0.999, a["file"]


def test_failed_gate_exits_nonzero_and_keeps_exported_byte_identical(quick, monkeypatch, capsys):
    cfg, _, out = quick
    before = _digest(out)
    # A deliberately broken int8 artifact: calibrated on blank images, its input scale is wrong.
    monkeypatch.setattr(representative, "calibration_images",
                        lambda cfg, splits: np.full((10, 28, 28, 1), -0.81, dtype=np.float32))
    # The default gate (0.3 pp, 99 %), through the command line a user runs.
    code = cli.main(["export", "--profile", "quick", "--build-dir", cfg.build_dir, "--export-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 3
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "parity gate failed" in errors[0] and "model_int8.tflite" in errors[0]
    assert _digest(out) == before
    assert not list(out.parent.glob(".exported-staging-*"))


def test_changing_only_quantization_does_not_retrain(quick, capfd):
    cfg, _, out = quick
    again = make_config("quick", build_dir=cfg.build_dir, export_dir=str(out.parent / "exported2"),
                        **{"gate.max_drop_pp": 100.0, "gate.min_agreement": 0.0, "quant.calibration_size": 50})
    old = out.parent / "exported2"                      # a release measured by `make compat` before
    old.mkdir()
    (old / "compat.md").write_text("# Compatibility\n")
    export.run(again)
    err = capfd.readouterr().err
    assert "[train] reusing" in err and "[prune] reusing" in err
    assert not (old / "compat.md").exists() and "compat: the previous compat.md" in err and "make compat" in err


def _photo_folder(root: Path) -> Path:
    """A tiny real-photos-style folder (MANIFEST.tsv + JPEGs): dataset garments, dark on a light, noisy floor."""
    from PIL import Image
    from pipeline.data import fashion_mnist
    _, _, x_test, y_test, _ = fashion_mnist.load_raw()
    rng = np.random.default_rng(0)
    rows = ["path\tclass_index\tclass_name"]
    for i in range(6):
        floor = rng.integers(170, 230, (120, 160, 3), dtype=np.uint8)
        garment = np.asarray(Image.fromarray(255 - x_test[i]).resize((90, 90)))
        floor[15:105, 35:125] = np.minimum(floor[15:105, 35:125], garment[..., None])
        (root / "photos").mkdir(parents=True, exist_ok=True)
        Image.fromarray(floor).save(root / "photos" / f"{i}.jpg", quality=90)
        rows.append(f"photos/{i}.jpg\t{y_test[i]}\t{fashion_mnist.CLASS_NAMES[y_test[i]]}")
    (root / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    return root


def test_photos_command_remeasures_only_the_real_photos_of_a_release(quick, tmp_path, capsys):
    import shutil
    _, _, out = quick
    release = tmp_path / "exported"
    shutil.copytree(out, release)
    models_before = {n: h for n, h in _digest(release).items() if n.startswith("model_")}
    assert cli.main(["photos", "--export-dir", str(release), "--photos", str(_photo_folder(tmp_path / "dev"))]) == 0
    manifest = json.loads((release / "manifest.json").read_text())
    r = manifest["real_photos"]
    assert r["photos"] == 6 and r["folder"] == "dev"
    assert sum(c["photos"] for c in r["per_class"].values()) == 6
    assert r["correct"] == sum(c["correct"] for c in r["per_class"].values()) == int(round(r["accuracy"] * 6))
    assert f"({r['correct']}/6)" in (release / "report.md").read_text()
    assert (release / "real_photos_contact_sheet.png").is_file()
    assert {n: h for n, h in _digest(release).items() if n.startswith("model_")} == models_before
    assert not list(tmp_path.glob(".exported-staging-*"))
    capsys.readouterr()
    assert cli.main(["photos", "--export-dir", str(release), "--photos", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'nowhere'}: not a real-photos folder (no MANIFEST.tsv in it)"]


def test_gate_boundary_is_inclusive():
    """3 of 1,000 images below the float model is a 0.3 pp drop: within a 0.3 pp gate (float error aside)."""
    from pipeline.config import GateConfig
    from pipeline.evaluate.parity import gate
    r = {"m": {"accuracy": 0.773, "agreement_with_float": 0.994}}
    assert gate(r, 0.776, GateConfig()) == []
    assert gate(r, 0.777, GateConfig())[0].startswith("m: accuracy 77.30% is 0.40 pp below")


def test_the_release_carries_its_microcontroller_figures_and_c_source(quick):
    """The MCU stage ran inside the export: TFLM agreed with LiteRT's reference kernels on every quick test
    image's top-1, the arena and flash are measured, and the C source holds the model's very bytes."""
    cfg, manifest, out = quick
    mcu = manifest["mcu"]
    assert mcu["for_microcontrollers"] is True and mcu["why_not"] is None
    assert mcu["agreement"]["images"] == manifest["test_images"]
    assert mcu["agreement"]["top1_agreement"] >= cfg.mcu.min_agreement
    assert 10_000 < mcu["arena_bytes"] < mcu["arena_reserve_bytes"] < 256 * 1024
    assert mcu["flash_bytes"] >= (out / "model_int8.tflite").stat().st_size
    source = (out / "mcu" / "model_data.cc").read_text()
    assert f"{(out / 'model_int8.tflite').stat().st_size}" in source
    assert "## On a microcontroller" in (out / "report.md").read_text()


def test_mcu_command_measures_a_release_exported_before_the_mcu_stage(quick, tmp_path, capsys):
    """`python -m pipeline mcu` on a release without the MCU figures (as the ones exported before the stage
    existed): the manifest gains the same `mcu` block an export writes, the C source appears, the models stay."""
    import shutil
    cfg, manifest, out = quick
    old = tmp_path / "exported"
    shutil.copytree(out, old)
    shutil.rmtree(old / "mcu")
    stripped = json.loads((old / "manifest.json").read_text())
    del stripped["mcu"]
    (old / "manifest.json").write_text(json.dumps(stripped))
    models = {n: (old / n).read_bytes() for n in FILES if n.startswith("model_")}
    assert cli.main(["mcu", "--export-dir", str(old)]) == 0
    assert f"C source in {old}/mcu/" in capsys.readouterr().out
    again = json.loads((old / "manifest.json").read_text())["mcu"]
    for key in ("arena_bytes", "flash_bytes", "ops", "for_microcontrollers"):
        assert again[key] == manifest["mcu"][key], key
    assert again["agreement"]["images"] == manifest["test_images"]
    assert (old / "mcu" / "model_data.cc").read_bytes() == (out / "mcu" / "model_data.cc").read_bytes()
    assert {n: (old / n).read_bytes() for n in models} == models
    assert "## On a microcontroller" in (old / "report.md").read_text()
