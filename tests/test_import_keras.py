"""`export --keras-model`: the user's own model read, checked, rebuilt in tf_keras, proven equal and exported.

The tutorials' models are built and trained (an epoch on a subset) by scripts/tutorial_models.py, saved the
tutorial's way, and exported on the quick profile; errors are one line and exit code 2."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import cli
from pipeline.data import fashion_mnist
from pipeline.keras_import import importer
from pipeline.config import make_config
from scripts import tutorial_models

REPO = Path(__file__).resolve().parents[1]
QUICK_GATE = ["--max-drop-pp", "1.0", "--min-agreement", "0.98"]   # 1 epoch on 3,000 images; 1 image is 0.1 pp


def _keras3():
    import keras
    return keras


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def _export(path: Path, out: Path, *flags: str) -> int:
    return cli.main(["export", "--profile", "quick", "--keras-model", str(path), "--build-dir", str(out / "build"),
                     "--export-dir", str(out / "exported"), *flags])


@pytest.fixture(scope="module")
def quick_splits():
    return fashion_mnist.load(make_config("quick"))


def _import(path: Path, splits, **overrides):
    cfg = make_config("quick", **{"keras_model.path": str(path), **overrides})
    return importer.import_model(cfg, splits, lambda stage, message: None)


# --- the rebuild, proven -------------------------------------------------------------------------------

def test_keras3_functional_model_with_nested_augmentation_is_rebuilt_equal(tmp_path, quick_splits):
    """Conv, depthwise, separable, batch norm, Add, Concatenate, pooling, a Normalization adapted on raw pixels
    and a nested augmentation Sequential: rebuilt flat in tf_keras, outputs equal to Keras 3's."""
    keras = _keras3()
    L = keras.layers
    keras.utils.set_random_seed(0)
    norm = L.Normalization(axis=None)
    norm.adapt(quick_splits.x_train[:500, ..., None].astype("float32"))
    inp = keras.Input((28, 28, 1))
    h = norm(keras.Sequential([L.RandomFlip("horizontal"), L.RandomRotation(0.05)], name="augment")(inp))
    a = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", use_bias=False)(h)))
    b = L.LeakyReLU(0.1)(L.DepthwiseConv2D(3, padding="same")(a))
    c = L.Add()([a, b])
    d = L.Concatenate()([c, L.SeparableConv2D(8, 3, padding="same", activation="relu")(c)])
    out = L.Dense(10)(L.Dropout(0.1)(L.GlobalAveragePooling2D()(L.MaxPooling2D()(d))))
    path = tmp_path / "functional.keras"
    keras.Model(inp, out).save(path)

    r = _import(path, quick_splits, **{"keras_model.min_accuracy": 0.0})   # untrained: accuracy is chance
    proof = r.info["proof"]
    assert proof["equal"] and proof["top1_identical"] and proof["images"] == 1000
    assert proof["max_abs_diff"] <= 1e-4 * proof["output_scale"]
    assert r.info["dropped_layers"] == ["random_flip (RandomFlip)", "random_rotation (RandomRotation)"]
    assert r.info["outputs"] == "logits" and r.model.layers[-1].__class__.__name__ == "Softmax"
    # adapted on 0..255 pixels, so the device feeds raw pixels: (pixel/255 - 0) / (1/255)
    assert (r.cfg.data.mean, r.cfg.data.std) == (0.0, 1.0 / 255.0)
    names = [type(layer).__name__ for layer in r.model.layers]
    assert "Sequential" not in names and "RandomFlip" not in names and "SeparableConv2D" in names
    probs = r.model.predict(quick_splits.x_test[:50, ..., None].astype(np.float32), verbose=0)   # raw pixels
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_tf_keras_savedmodel_is_rebuilt_and_versions_are_read(tmp_path, quick_splits):
    path = tutorial_models.train_and_save("dc-cnn", tmp_path, epochs=1, train_limit=3000)
    assert path.is_dir() and (path / "keras_metadata.pb").is_file()
    r = _import(path, quick_splits)
    assert r.info["format"] == "keras2-savedmodel" and r.info["saved_by"].startswith("Keras 2.")
    assert r.info["proof"]["equal"] and r.info["outputs"] == "probabilities" and not r.info["softmax_appended"]
    assert r.cfg.origin["sha256"] == importer.read_source(path).sha256


# --- one line, exit code 2 ------------------------------------------------------------------------------

def test_custom_layer_keras_file_names_the_layer_and_exits_2(tmp_path, capsys):
    keras = _keras3()

    @keras.saving.register_keras_serializable(package="tests")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return 2 * x

    path = tmp_path / "custom.keras"
    keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), Doubler(name="doubler"),
                      keras.layers.Dense(10)]).save(path)
    assert _export(path, tmp_path) == 2
    errors = _error_lines(capsys)
    assert errors == ["error: custom.keras: layer 'doubler' (tests>Doubler, module test_import_keras) is not a "
                      "built-in Keras layer: its code, from outside Keras, would run on this machine; refused: give "
                      "--trust-model only if you wrote this file or trust its code"]
    assert not (tmp_path / "exported").exists()


def test_model_with_five_outputs_is_refused_with_the_shape_and_exit_2(tmp_path, capsys):
    keras = _keras3()
    path = tmp_path / "five.keras"
    keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(5, activation="softmax")]).save(path)
    assert _export(path, tmp_path) == 2
    assert _error_lines(capsys) == ["error: five.keras: the model gives output of shape (N, 5); expected (N, 10): "
                                    "one score per Fashion-MNIST class"]


def test_wrong_input_shape_and_non_model_files_are_one_line(tmp_path, capsys):
    keras = _keras3()
    path = tmp_path / "rgb.keras"
    keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)]).save(path)
    assert _export(path, tmp_path) == 2
    assert _error_lines(capsys) == ["error: rgb.keras: the model takes input of shape (N, 32, 32, 3); expected one "
                                    "28×28 grayscale image: (N, 28, 28), (N, 28, 28, 1) or (N, 784)"]
    (tmp_path / "notes.h5").write_text("not a model")
    assert _export(tmp_path / "notes.h5", tmp_path) == 2
    assert _error_lines(capsys) == [f"error: {tmp_path / 'notes.h5'}: not a Keras model file; expected a Keras 3 "
                                    ".keras archive, an HDF5 .h5 or a SavedModel folder"]


def test_wrong_normalization_says_check_the_normalization_and_which_works(tmp_path, capsys):
    """Trained on raw 0..255 pixels without saying so in the model: pixel / 255 (the default) is near chance."""
    keras = _keras3()
    keras.utils.set_random_seed(0)
    x, y, _, _, _ = fashion_mnist.load_raw()
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:3000].astype("float32"), y[:3000], epochs=2, verbose=0)
    path = tmp_path / "raw.keras"
    model.save(path)
    assert _export(path, tmp_path) == 2
    [error] = _error_lines(capsys)
    assert error.startswith("error: raw.keras: ") and "test images right with input pixel / 255 (chance is 10 %" in error
    assert "check the normalization; with --input-scale 1 (raw pixels 0..255) it gets" in error
    assert not (tmp_path / "exported").exists()


def test_layer_tf_keras_lacks_needs_no_prune(tmp_path, capsys):
    keras = _keras3()
    path = tmp_path / "unitnorm.keras"
    keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.UnitNormalization(name="unit"),
                      keras.layers.Dense(10)]).save(path)
    assert _export(path, tmp_path) == 2
    assert _error_lines(capsys) == ["error: unitnorm.keras: layer 'unit' (UnitNormalization) cannot be rebuilt in "
                                    "tf_keras, which pruning needs; --no-prune exports the model unpruned, "
                                    "computed by the Keras that saved it"]


# --- the tutorials, exported -------------------------------------------------------------------------------

def _count_right(answers: str, root: Path) -> int:
    """Correct `edge-classify --json` answers on PNGs written by `data.write_pngs` (class in the folder name)."""
    right = 0
    for line in answers.splitlines():
        a = json.loads(line)
        right += a["label"] == fashion_mnist.CLASS_NAMES[int(Path(a["path"]).parent.name.split("_")[0])]
    return right


@pytest.fixture(scope="module")
def test_pngs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pngs")
    _, _, x, y, _ = fashion_mnist.load_raw()
    fashion_mnist.write_pngs(x[:1000], y[:1000], root)
    return root


# name → (what the manifest's origin says saved it, the normalization the model carries or the default)
TUTORIAL_CASES = {
    "tf-basic": ("Keras 3.", (0.0, 1.0), "logits"),
    "8thlight": ("Keras 3.", (0.0, 1.0 / 255.0), "logits"),
    "mlm": ("Keras 2.", (0.0, 1.0), "probabilities"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TUTORIAL_CASES))
def test_tutorial_model_exports_through_the_gate_and_edge_classify_agrees(name, tmp_path, test_pngs, capsys):
    saved_by, (mean, std), outputs = TUTORIAL_CASES[name]
    path = tutorial_models.train_and_save(name, tmp_path / "model", epochs=1, train_limit=3000)
    assert _export(path, tmp_path, *QUICK_GATE) == 0
    out = tmp_path / "exported"
    manifest = json.loads((out / "manifest.json").read_text())
    imp, origin = manifest["import"], manifest["config"]["origin"]
    assert origin == {"kind": "keras-model", "file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                      "saved_by": imp["saved_by"], "format": imp["format"]}
    assert imp["saved_by"].startswith(saved_by) and imp["outputs"] == outputs
    assert imp["proof"]["equal"] and imp["proof"]["top1_identical"] and imp["proof"]["images"] == 1000
    assert manifest["gate"]["passed"] is True and manifest["gate"]["failures"] == []
    assert manifest["input"]["normalization"] == {"mean": mean, "std": std}
    assert manifest["pruning"]["measured_sparsity"] >= 0.49
    rows = manifest["device_cost"]
    assert [r["stage"] for r in rows] == ["imported", "pruned", "int8", "release"]
    assert all(r["latency_us"] > 0 and r["bytes"] > 0 for r in rows)
    assert rows[2]["bytes"] < rows[1]["bytes"] / 3                      # int8 vs float32
    report = (out / "report.md").read_text()
    assert "## What the device version costs" in report and f"`{path.name}`" in report
    # The device: the same count as the manifest on the same 1,000 test images, normalization from the manifest.
    i8 = next(a for a in manifest["artifacts"] if a["file"] == "model_int8.tflite")
    run = subprocess.run([sys.executable, "-m", "edge_runtime", "--json", "--top-k", "1", "--model",
                          str(out / "model_int8.tflite"), str(test_pngs)], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert _count_right(run.stdout, test_pngs) == i8["correct_first_1000"] == i8["correct"]


@pytest.mark.slow
def test_savedmodel_without_keras_metadata_exports_as_it_is_with_no_prune(tmp_path, capsys):
    """A Keras 3 model.export() folder has no layers to prune: --no-prune wraps it unchanged, and it is gated."""
    keras = _keras3()
    keras.utils.set_random_seed(0)
    x, y, _, _, _ = fashion_mnist.load_raw()
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:3000] / 255.0, y[:3000], epochs=1, verbose=0)
    model.export(str(tmp_path / "served"), verbose=False)
    assert _export(tmp_path / "served", tmp_path, *QUICK_GATE) == 2      # nothing to prune
    assert "--no-prune exports it as it is" in _error_lines(capsys)[0]
    assert _export(tmp_path / "served", tmp_path, "--no-prune", *QUICK_GATE) == 0
    manifest = json.loads((tmp_path / "exported" / "manifest.json").read_text())
    assert manifest["import"]["rebuilt"] is False and manifest["import"]["proof"]["equal"]
    assert manifest["import"]["saved_by"].startswith("TensorFlow ") and manifest["gate"]["passed"] is True
    assert manifest["config"]["prune"]["enabled"] is False and manifest["import"]["softmax_appended"] is True
