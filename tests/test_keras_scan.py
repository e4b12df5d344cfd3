"""`export --keras-model` reads what a model file holds before any loader runs it (issue #29).

Four files carry a payload that writes a MARKER file when their code runs (a tf_keras .h5 Lambda, a Keras 3
.keras Lambda, a tf_keras SavedModel whose serving signature calls tf.io.write_file, a SavedModel with
tf.py_function / tf.numpy_function): `export` refuses each, with and without --no-prune, in one line with
exit code 2, writes nothing, and the marker never appears. --trust-model lets one through and the manifest
records what it carried. The tutorials' models, the release's architecture and nested models pass."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import ModelError
from pipeline.keras_import import scan, scan_config

REPO = Path(__file__).resolve().parents[1]
# TensorFlow's C++ start-up lines (absl logging before InitializeLog ignores TF_CPP_MIN_LOG_LEVEL): not ours.
TF_LOG = re.compile(r"^(WARNING: All log messages before absl|[IWE]\d{4} \d\d:\d\d:\d\d)")


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.strip().splitlines() if not TF_LOG.match(line)]


def _payload(marker: Path) -> str:
    """Source of a lambda that writes `marker` and passes its input through; the path is a constant in its code."""
    return f"lambda x: (open({str(marker)!r}, 'w').write('ran'), x)[1]"


def _tf_keras_lambda_h5(root: Path, marker: Path) -> Path:
    import tf_keras
    L = tf_keras.layers
    model = tf_keras.Sequential([L.InputLayer((28, 28, 1)), L.Lambda(eval(_payload(marker)), name="lambda"),
                                 L.Flatten(), L.Dense(10, activation="softmax")])
    path = root / "lambda.h5"
    model.save(path)
    return path


def _keras3_lambda(root: Path, marker: Path) -> Path:
    import keras
    L = keras.layers
    model = keras.Sequential([keras.Input((28, 28, 1)), L.Lambda(eval(_payload(marker)), name="payload"),
                              L.Flatten(), L.Dense(10, activation="softmax")])
    path = root / "lambda.keras"
    model.save(path)          # saving a lambda works; Keras 3 refuses to load it only in safe mode
    return path


def _tf_keras_savedmodel_write_file(root: Path, marker: Path) -> Path:
    import tensorflow as tf
    import tf_keras
    L = tf_keras.layers
    model = tf_keras.Sequential([L.InputLayer((28, 28, 1)), L.Flatten(), L.Dense(10, activation="softmax")])

    @tf.function(input_signature=[tf.TensorSpec((None, 28, 28, 1), tf.float32)])
    def serve(x):
        tf.io.write_file(str(marker), "ran")
        return {"output": model(x)}

    path = root / "write_file_savedmodel"
    model.save(str(path), signatures={"serving_default": serve})
    return path


def _savedmodel_py_function(root: Path, marker: Path) -> Path:
    import tensorflow as tf

    class Served(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.zeros((784, 10)))

        @tf.function(input_signature=[tf.TensorSpec((None, 28, 28, 1), tf.float32)])
        def serve(self, x):
            def write(v):
                marker.write_text("ran")
                return v
            x = tf.py_function(write, [x], tf.float32)         # EagerPyFunc
            x = tf.numpy_function(write, [x], tf.float32)      # PyFunc
            return {"output": tf.nn.softmax(tf.reshape(x, (-1, 784)) @ self.w)}

    module = Served()
    path = root / "py_function_savedmodel"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


MALICIOUS = {   # name → (maker, what the one line must name)
    "tf_keras-h5-lambda": (_tf_keras_lambda_h5, "Lambda layer 'lambda'"),
    "keras3-lambda": (_keras3_lambda, "Lambda layer 'payload'"),
    "tf_keras-savedmodel-write-file": (_tf_keras_savedmodel_write_file, "op WriteFile in function __inference_serve"),
    "savedmodel-py-function": (_savedmodel_py_function, "op EagerPyFunc in function __inference_serve"),
}


@pytest.fixture(scope="module")
def malicious(tmp_path_factory):
    """The four files, and the marker their code writes (deleted after making them: building a Lambda runs it)."""
    root = tmp_path_factory.mktemp("malicious")
    marker = root / "MARKER"
    files = {name: make(root, marker) for name, (make, _) in MALICIOUS.items()}
    marker.unlink(missing_ok=True)
    return files, marker


def _export(path: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", "export", "--keras-model", str(path), "--profile", "quick",
                           "--export-dir", str(out / "exported"), "--build-dir", str(out / "build"), *flags],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("flags", [[], ["--no-prune"]], ids=["pruned", "no-prune"])
@pytest.mark.parametrize("name", list(MALICIOUS))
def test_model_that_carries_code_is_refused_in_one_line_and_nothing_runs(name, flags, malicious, tmp_path):
    files, marker = malicious
    run = _export(files[name], tmp_path, *flags)
    lines = _lines(run.stderr)
    assert run.returncode == 2, run.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {files[name].name}: "), run.stderr
    assert MALICIOUS[name][1] in lines[0] and "would" in lines[0] and "on this machine" in lines[0]
    assert "--no-prune" not in lines[0] and "--trust-model" in lines[0]
    assert not (tmp_path / "exported").exists() and not (tmp_path / "build").exists()
    assert not marker.exists()


def test_scan_lists_what_each_malicious_file_carries(malicious):
    files, marker = malicious
    h5 = scan.scan(files["tf_keras-h5-lambda"])
    assert h5.format == "keras2-h5" and h5.carried == ["Lambda layer 'lambda'"] and h5.layers["Dense"] == 1
    k3 = scan.scan(files["keras3-lambda"])
    assert k3.format == "keras3" and k3.carried == ["Lambda layer 'payload'"]
    wf = scan.scan(files["tf_keras-savedmodel-write-file"])
    assert wf.format == "keras2-savedmodel" and [c.split(" in ")[0] for c in wf.carried] == ["op WriteFile"]
    assert wf.ops["SaveV2"] == 1 and wf.ops["RestoreV2"] == 1       # the saver's own: not refused
    py = scan.scan(files["savedmodel-py-function"])
    assert sorted(c.split(" in ")[0] for c in py.carried) == ["op EagerPyFunc", "op PyFunc"]
    assert not marker.exists()


def _quick_splits():
    from pipeline.data import fashion_mnist
    from pipeline.config import make_config
    return fashion_mnist.load(make_config("quick"))


def test_trusted_model_records_trusted_and_what_it_carried(malicious, tmp_path):
    """The function-level path of --trust-model (the CLI one is the slow test below): without pruning the
    Lambda runs (the marker appears: that is what trusting means) and the origin says so."""
    from pipeline.keras_import import importer
    from pipeline.config import make_config
    files, marker = malicious
    path = files["tf_keras-h5-lambda"]
    cfg = make_config("quick", **{"keras_model.path": str(path), "build_dir": str(tmp_path / "build"),
                                  "keras_model.min_accuracy": 0.0})
    with pytest.raises(ModelError, match="Lambda layer 'lambda' holds Python bytecode"):
        scan.admit(cfg)
    trusted = scan.admit(cfg, trust=True)
    assert trusted.origin == {"trusted": True, "carried": ["Lambda layer 'lambda'"]}
    splits = _quick_splits()
    with pytest.raises(ModelError) as e:             # pruning needs a rebuild, which a Lambda has not
        importer.import_model(trusted, splits, lambda stage, message: None)
    assert "--no-prune exports the model unpruned" in str(e.value)
    assert "including the code it carries, which runs on this machine (Lambda layer 'lambda')" in str(e.value)
    import dataclasses
    unpruned = dataclasses.replace(trusted, prune=dataclasses.replace(trusted.prune, enabled=False))
    imported = importer.import_model(unpruned, splits, lambda stage, message: None)
    assert imported.cfg.origin["trusted"] is True and imported.cfg.origin["carried"] == ["Lambda layer 'lambda'"]
    assert imported.cfg.origin["kind"] == "keras-model" and imported.cfg.origin["file"] == "lambda.h5"
    assert marker.exists()
    marker.unlink()


@pytest.mark.slow
def test_trust_model_exports_and_the_manifest_records_it(malicious, tmp_path):
    files, marker = malicious
    run = _export(files["tf_keras-h5-lambda"], tmp_path, "--no-prune", "--trust-model",
                  "--max-drop-pp", "100", "--min-agreement", "0", "--min-accuracy", "0")
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = json.loads((tmp_path / "exported" / "manifest.json").read_text())
    origin = manifest["config"]["origin"]
    assert origin["trusted"] is True and origin["carried"] == ["Lambda layer 'lambda'"]
    assert origin["file"] == "lambda.h5" and origin["format"] == "keras2-h5"
    marker.unlink(missing_ok=True)


# --- clean models pass -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tutorials(tmp_path_factory):
    """The five tutorial models (scripts/tutorial_models.py's architectures and ways of saving), 1 epoch on 256 images."""
    from scripts import tutorial_models
    root = tmp_path_factory.mktemp("tutorials")
    return {name: tutorial_models.train_and_save(name, root / name, epochs=1, train_limit=256)
            for name in tutorial_models.TUTORIALS}


@pytest.mark.parametrize("name,fmt", [("tf-basic", "keras3"), ("dc-dense", "keras3"), ("dc-cnn", "keras2-savedmodel"),
                                      ("8thlight", "keras3-h5"), ("mlm", "keras2-h5")])
def test_tutorial_models_pass_the_scan(name, fmt, tutorials):
    c = scan.scan(tutorials[name])
    assert c.format == fmt and c.refused == [] and c.layers["Dense"] >= 1
    if fmt == "keras2-savedmodel":                  # the saver's SaveV2/RestoreV2 are its own
        assert c.ops["SaveV2"] == 1 and c.ops["RestoreV2"] == 1 and c.ops["Conv2D"] >= 2
    if name == "8thlight":
        assert c.layers["Rescaling"] == 1


def test_release_architecture_passes_the_scan(tmp_path):
    """The repo's own model: the cached release training if there is one, else `compact` built here."""
    cached = sorted(Path("build").glob("train-*/model.h5"))
    if cached:
        path = cached[0]
    else:
        from pipeline.train import models
        path = tmp_path / "compact.h5"
        models.build("compact", weight_decay=5e-4).save(path)
    c = scan.scan(path)
    assert c.refused == [] and c.layers["Conv2D"] + c.layers["SeparableConv2D"] >= 3


def test_keras3_export_savedmodel_passes_the_scan(tmp_path):
    import keras
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.export(str(tmp_path / "served"), verbose=False)
    c = scan.scan(tmp_path / "served")
    assert c.format == "savedmodel" and c.refused == [] and c.ops["MatMul"] >= 1


def test_nested_sequential_in_functional_and_wrappers_pass_and_a_nested_lambda_is_found(tmp_path):
    import keras
    import tf_keras
    L = keras.layers
    inner = keras.Sequential([L.Conv2D(4, 3, padding="same"), L.ReLU()], name="block")
    inp = keras.Input((28, 28, 1))
    seq = L.Reshape((28, 112))(inner(inp))
    rnn = L.Bidirectional(L.LSTM(4))(L.TimeDistributed(L.Dense(8))(seq))
    keras.Model(inp, L.Dense(10)(rnn)).save(tmp_path / "nested.keras")
    c = scan.scan(tmp_path / "nested.keras")
    assert c.refused == []
    assert c.layers["Sequential"] == 1 and c.layers["Conv2D"] == 1 and c.layers["LSTM"] == 2
    assert c.layers["TimeDistributed"] == 1 and c.layers["Bidirectional"] == 1

    T = tf_keras.layers
    inner = tf_keras.Sequential([T.Conv2D(4, 3, padding="same"), T.TimeDistributed(T.Lambda(lambda t: t * 2),
                                                                                       name="hidden")], name="block")
    inp = tf_keras.Input((28, 28, 1))
    tf_keras.Model(inp, T.Dense(10)(T.Flatten()(inner(inp / 255.0)))).save(tmp_path / "nested.h5")
    c = scan.scan(tmp_path / "nested.h5")
    assert [r.what for r in c.refused] == ["Lambda layer 'lambda'"]       # x / 255.0 (TFOpLambda) is arithmetic
    assert c.layers["TFOpLambda"] == 1 and c.layers["TimeDistributed"] == 1


def test_custom_layers_and_objects_are_refused(tmp_path):
    import keras

    @keras.saving.register_keras_serializable(package="tests")
    def swish2(x):
        return x * keras.ops.sigmoid(x)

    @keras.saving.register_keras_serializable(package="tests")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return 2 * x

    keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(16, activation=swish2, name="hidden"),
                      Doubler(name="doubler"), keras.layers.Dense(10)]).save(tmp_path / "custom.keras")
    c = scan.scan(tmp_path / "custom.keras")
    carried = " | ".join(c.carried)
    assert "custom object 'tests>swish2' (activation of layer 'hidden')" in carried
    assert "layer 'doubler' (tests>Doubler" in carried
    with pytest.raises(ModelError, match=r"^custom\.keras: .* on this machine .*--trust-model"):
        raise c.error()


def test_op_reaching_outside_in_a_signature_is_refused_even_when_it_is_a_saver_op(tmp_path):
    import tensorflow as tf

    class Reads(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 784), tf.float32)])
        def serve(self, x):
            w = tf.raw_ops.RestoreV2(prefix="/etc/somewhere", tensor_names=["w"], shape_and_slices=[""],
                                     dtypes=[tf.float32])[0]
            return {"output": x * w}

    module = Reads()
    tf.saved_model.save(module, str(tmp_path / "reads"), signatures={"serving_default": module.serve})
    c = scan.scan(tmp_path / "reads")
    assert [r.what.split(" in ")[0] for r in c.refused] == ["op RestoreV2"]
    assert "reads or writes files" in str(c.refused[0])


def test_allow_list_is_the_installed_keras_layers():
    import keras
    import tf_keras
    names = scan_config.builtin_layers()
    for n in ("Dense", "Conv2D", "Rescaling", "TimeDistributed", "Bidirectional", "LSTM", "InputLayer"):
        assert n in names
    assert not {"Lambda", "TFSMLayer", "Layer"} & names
    modules = (keras.layers, tf_keras.layers, tf_keras.layers.experimental, tf_keras.layers.experimental.preprocessing)
    real = {n for module in modules for n in dir(module) if isinstance(getattr(module, n), type)}
    assert names <= real


def test_scan_of_keras_and_h5_files_does_not_import_tensorflow(tutorials):
    code = ("import sys; from pipeline.keras_import import scan; "
            f"[scan.scan(p) for p in {[str(tutorials['tf-basic']), str(tutorials['mlm'])]!r}]; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules, 'tf_keras' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.stdout.split() == ["False", "False", "False"], run.stderr
