"""edge_runtime.backends with real LiteRT and onnxruntime on real (small) models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edge_runtime.backends import OnnxBackend, TFLiteBackend, load_backend
from edge_runtime.classifier import Classifier
from edge_runtime.errors import EdgeError

try:
    from edge_models import REPO, fashion_mnist
except ImportError:  # tests/ collected as a package
    from tests.edge_models import REPO, fashion_mnist


def test_backend_is_chosen_by_content(models):
    assert isinstance(load_backend(models / "model_int8.tflite"), TFLiteBackend)
    assert isinstance(load_backend(models / "model_int8.onnx"), OnnxBackend)


def test_tflite_renamed_onnx_is_named_as_tflite(models, tmp_path):
    shutil.copy(models / "model_int8.tflite", tmp_path / "model.onnx")
    with pytest.raises(EdgeError, match=r"model\.onnx: is a TFLite flatbuffer, not ONNX"):
        load_backend(tmp_path / "model.onnx")


def test_onnx_renamed_tflite_is_refused(models, tmp_path):
    shutil.copy(models / "model_int8.onnx", tmp_path / "model.tflite")
    with pytest.raises(EdgeError, match=r"model\.tflite: is not a TFLite flatbuffer"):
        load_backend(tmp_path / "model.tflite")


@pytest.mark.parametrize("name", ["model_int8.tflite", "model_int8.onnx", "model_float.onnx"])
@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_model_names_the_file(models, tmp_path, name, keep):
    data = (models / name).read_bytes()
    bad = tmp_path / name
    bad.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(EdgeError, match=rf"{bad}: .*corrupt or truncated"):
        load_backend(bad)


def test_empty_missing_and_unknown_model_files(tmp_path):
    (tmp_path / "empty.tflite").write_bytes(b"")
    with pytest.raises(EdgeError, match=r"empty.tflite: model file is empty"):
        load_backend(tmp_path / "empty.tflite")
    with pytest.raises(EdgeError, match=r"gone.onnx: model file not found"):
        load_backend(tmp_path / "gone.onnx")
    (tmp_path / "model.bin").write_bytes(b"\x00" * 64)
    with pytest.raises(EdgeError, match=r"model.bin: unknown model format"):
        load_backend(tmp_path / "model.bin")


@pytest.mark.parametrize("name", ["model.tflite", "model.onnx"])
def test_wrong_input_shape_is_refused(models, name):
    with pytest.raises(EdgeError, match=r"input shape is \(N, 32, 32, 1\), expected \(N, 28, 28, 1\)"):
        load_backend(models / "wrong_shape" / name)


def test_int8_quant_params_come_from_each_model(models):
    manifest = json.loads((models / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["file"] == "model_int8.tflite")
    tfl, onx = load_backend(models / "model_int8.tflite"), load_backend(models / "model_int8.onnx")
    assert tfl.input_dtype is np.int8 and onx.input_dtype is np.int8
    assert tfl.input_shape == (None, 28, 28, 1)
    assert tfl.input_quant == pytest.approx((entry["input"]["scale"], entry["input"]["zero_point"]))
    assert onx.input_quant == pytest.approx(tfl.input_quant)  # from the ONNX metadata_props
    assert onx.output_quant == pytest.approx(tfl.output_quant)
    flt = load_backend(models / "model_float.tflite")
    assert flt.input_dtype is np.float32 and flt.input_quant is None and flt.output_quant is None


def test_int8_onnx_without_metadata_falls_back_to_manifest_or_refuses(models, tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(models / "model_int8.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "model_int8.onnx"))
    assert load_backend(tmp_path / "model_int8.onnx").input_quant is None
    with pytest.raises(EdgeError, match="input_scale, input_zero_point"):
        Classifier(tmp_path / "model_int8.onnx")
    manifest = json.loads((models / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        entry.pop("sha256")  # this copy differs from the listed file
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    reference = Classifier(models / "model_int8.onnx")
    assert Classifier(tmp_path / "model_int8.onnx").input_quant == pytest.approx(reference.input_quant)


@pytest.mark.parametrize("name", ["model_int8.tflite", "model_int8.onnx", "model_float.tflite", "model_float.onnx"])
def test_batch_equals_one_at_a_time(models, name):
    clf = Classifier(models / name)
    images = fashion_mnist("t10k", 300)[0]
    batch = clf.scores(images)
    singles = np.concatenate([clf.scores(images[i : i + 1]) for i in range(0, 300, 7)])
    again = clf.scores(images)
    assert np.array_equal(batch, again), "scores must be deterministic"
    if "int8" in name:
        assert np.array_equal(batch[::7], singles)
    else:
        np.testing.assert_allclose(batch[::7], singles, atol=1e-6)
    # odd sizes, more than one chunk, and empty
    assert np.array_equal(clf.scores(np.concatenate([images, images[:20]]))[:300], batch)
    assert clf.scores(images[:0]).shape == (0, 10)


_NO_TENSORFLOW = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"tensorflow", "tf_keras", "keras", "pipeline"}:
                raise ImportError(f"{name} is not installed on this device")
            return None

    sys.meta_path.insert(0, Refuse())
    from edge_runtime import Classifier
    predictions = Classifier(sys.argv[1]).classify(sys.argv[2], top_k=2)
    print(json.dumps({
        "top1": predictions[0].label,
        "loaded": sorted({m.split(".")[0] for m in sys.modules} & {
            "tensorflow", "tf_keras", "keras", "pipeline", "onnxruntime", "ai_edge_litert", "tflite_runtime", "cv2"}),
    }))
    """
)


@pytest.mark.parametrize("name, backend", [("model_int8.tflite", "ai_edge_litert"), ("model_int8.onnx", "onnxruntime")])
def test_runtime_works_where_tensorflow_cannot_be_imported(models, tmp_path, name, backend):
    from PIL import Image

    image = fashion_mnist("t10k", 1)[0][0]
    Image.fromarray(image).save(tmp_path / "item.png")
    done = subprocess.run(
        [sys.executable, "-c", _NO_TENSORFLOW, str(models / name), str(tmp_path / "item.png")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["loaded"] == [backend], "only the one backend this model needs may be imported"
    assert result["top1"] == Classifier(models / name).classify(image)[0].label


_WITHOUT_BACKENDS = textwrap.dedent(
    """
    import importlib.abc, sys

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"ai_edge_litert", "tflite_runtime", "onnxruntime"}:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    from edge_runtime.cli import main
    sys.exit(main(["--model", sys.argv[1], sys.argv[2]]))
    """
)


@pytest.mark.parametrize("name, hint", [("model_int8.tflite", "no TFLite runtime installed"),
                                        ("model_int8.onnx", "onnxruntime is not installed")])
def test_missing_backend_is_one_line_with_the_install_hint(models, name, hint):
    done = subprocess.run([sys.executable, "-c", _WITHOUT_BACKENDS, str(models / name), str(models / "any.png")],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1 and hint in done.stderr
