"""Artifacts that describe themselves: TFLite Metadata and ONNX metadata_props in every exported model file,
read back by edge_runtime when a model file is copied alone; the manifest still wins when it is there.
Also: both kernel counts of every .tflite, the MediaPipe-ready RGB model, and the ONNX models in the
OpenCV of this venv. On the quick export (tests/conftest.py)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import model_metadata
from edge_runtime.classifier import Classifier
from pipeline.data import fashion_mnist
from pipeline.release.manifest import ALL_ARTIFACTS, ARTIFACTS, RGB_ARTIFACT

pytestmark = pytest.mark.slow
TFLITE = [n for n, (fmt, _) in ALL_ARTIFACTS.items() if fmt == "tflite"]
ONNX = [n for n, (fmt, _) in ARTIFACTS.items() if fmt == "onnx"]


@pytest.fixture(scope="module")
def release(quick_release):
    cfg, manifest, root = quick_release
    x, y = fashion_mnist.load_raw()[2:4]
    n = manifest["test_images"]
    return cfg, manifest, root / "exported", x[:n], y[:n]


@pytest.mark.parametrize("name", TFLITE)
def test_every_tflite_carries_its_labels_and_normalization(release, name):
    cfg, _, out, _, _ = release
    info = model_metadata.read_tflite(out / name)
    assert list(info.labels) == list(fashion_mnist.CLASS_NAMES)
    if name.endswith("_rgb.tflite"):               # raw pixels in, normalization inside the graph
        assert info.mean is None and info.std is None
    else:
        assert info.mean == pytest.approx(cfg.data.mean, abs=1e-6) and info.std == pytest.approx(cfg.data.std, abs=1e-6)


@pytest.mark.parametrize("name", ONNX)
def test_every_onnx_carries_labels_normalization_layout_and_a_doc_string(release, name):
    import onnx
    cfg, _, out, _, _ = release
    model = onnx.load(str(out / name))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["labels"]) == list(fashion_mnist.CLASS_NAMES) and props["layout"] == "NHWC"
    assert json.loads(props["normalization"]) == {"mean": cfg.data.mean, "std": cfg.data.std, "scale": 255.0}
    assert "Fashion-MNIST" in model.doc_string and "(N, 28, 28, 1)" in model.doc_string


@pytest.mark.parametrize("name", ["model_int8.tflite", "model_float.tflite", "model_int8.onnx", "model_float.onnx"])
def test_a_model_file_alone_answers_like_it_does_beside_its_manifest(release, name, tmp_path, capsys):
    cfg, _, out, x, _ = release
    shutil.copy(out / name, tmp_path / name)
    alone = Classifier(tmp_path / name, calibrated=False)
    assert "warning" not in capsys.readouterr().err
    assert list(alone.labels) == list(fashion_mnist.CLASS_NAMES)
    assert (alone.mean, alone.std) == pytest.approx((cfg.data.mean, cfg.data.std), abs=1e-6)
    beside = Classifier(out / name, calibrated=False)
    assert (alone.scores(x).argmax(1) == beside.scores(x).argmax(1)).all()


def test_the_manifest_still_wins_and_is_still_checked(release, tmp_path):
    _, _, out, _, _ = release
    for f in ("model_int8.tflite", "manifest.json"):
        shutil.copy(out / f, tmp_path / f)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["labels"] = [f"class {i}" for i in range(10)]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert Classifier(tmp_path / "model_int8.tflite").labels[0] == "class 0"
    entry = next(a for a in manifest["artifacts"] if a["file"] == "model_int8.tflite")
    entry["sha256"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="sha256"):
        Classifier(tmp_path / "model_int8.tflite")


def test_edge_classify_with_the_model_file_alone_prints_the_labels_and_no_warning(release, tmp_path):
    from PIL import Image
    _, _, out, x, y = release
    shutil.copy(out / "model_int8.tflite", tmp_path / "model_int8.tflite")
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.kron(255 - x[1], np.ones((8, 8), np.uint8))).convert("RGB").save(photo, quality=95)
    cli = Path(sys.executable).with_name("edge-classify")
    done = subprocess.run([str(cli), "--model", str(tmp_path / "model_int8.tflite"), str(photo)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr
    labels = [part.rsplit(" ", 1)[0] for part in done.stdout.strip().split("\t")[1].split(", ")]
    assert set(labels) <= set(fashion_mnist.CLASS_NAMES) and len(labels) == 3


@pytest.mark.parametrize("name", TFLITE)
def test_both_kernel_counts_are_in_the_manifest_and_reproduce(release, name):
    from pipeline.evaluate import parity
    _, manifest, out, x, y = release
    entry = {a["file"]: a for a in manifest["artifacts"]}[name]
    evaluate = parity.evaluate_rgb if name.endswith("_rgb.tflite") else parity.evaluate
    for kernels in ("default", "reference"):
        r = evaluate(out / name, x, y, y, kernels=kernels)
        assert int((r["predictions"] == y).sum()) == entry["kernels"][kernels]["correct"], kernels
    assert entry["correct"] == entry["kernels"]["default"]["correct"]


def test_the_rgb_model_takes_uint8_rgb_and_answers_like_the_int8_model(release):
    from ai_edge_litert.interpreter import Interpreter
    _, manifest, out, _, _ = release
    inp = Interpreter(model_path=str(out / RGB_ARTIFACT)).get_input_details()[0]
    assert list(inp["shape"]) == [1, 28, 28, 3] and inp["dtype"] == np.uint8 and inp["quantization"] == (1.0, 0)
    assert manifest["rgb_model"]["agreement_with_model_int8_tflite"] >= 0.999
    arts = {a["file"]: a for a in manifest["artifacts"]}
    assert abs(arts[RGB_ARTIFACT]["bytes"] - arts["model_int8.tflite"]["bytes"]) < 4096


@pytest.mark.parametrize("name", ONNX)
def test_opencv_dnn_of_this_venv_reads_the_onnx_models_as_n_by_10_with_onnxruntimes_answers(release, name):
    cv2 = pytest.importorskip("cv2")
    from pipeline.compat import clients
    _, _, out, x, y = release
    net = cv2.dnn.readNetFromONNX(str(out / name))
    net.setInput(clients.model_inputs(out / name, x[:200]))
    got = net.forward()
    assert got.shape == (200, 10)
    assert (got.argmax(1) == Classifier(out / name).scores(x[:200]).argmax(1)).all()
