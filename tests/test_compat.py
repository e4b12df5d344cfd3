"""Clients we did not write, each in its own small venv under build/compat-venvs (made once, then reused),
on the quick export: MediaPipe Tasks ImageClassifier on the RGB model, OpenCV DNN 4.x on the ONNX models,
tflite-runtime 2.14 on the .tflite ones; and the table `python -m pipeline compat` writes."""
from pathlib import Path

import pytest

from pipeline.compat import clients

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def table(quick_release):
    _, manifest, root = quick_release
    rows = clients.run(root / "exported", REPO / "build", ["mediapipe", "opencv4", "tflite-runtime"], log=lambda m: None)
    return manifest, {(r["client"], r["version"].split(".")[0], r["artifact"]): r for r in rows}, root / "exported", rows


def _correct(manifest, name, kernels="default"):
    entry = {a["file"]: a for a in manifest["artifacts"]}[name]
    return entry["kernels"][kernels]["correct"] if "kernels" in entry else entry["correct"]


def test_mediapipe_classifies_the_rgb_model_like_model_int8_tflite_with_its_label_names(table):
    manifest, rows, _, _ = table
    r = next(r for (c, _, a), r in rows.items() if c.startswith("MediaPipe") and a == "model_int8_rgb.tflite")
    assert "refused" not in r["result"] and "no label names" not in r["result"], r
    assert abs(r["correct"] - _correct(manifest, "model_int8.tflite")) <= 0.001 * manifest["test_images"]


def test_mediapipe_refuses_the_grayscale_models_and_says_why(table):
    _, rows, _, _ = table
    r = next(r for (c, _, a), r in rows.items() if c.startswith("MediaPipe") and a == "model_int8.tflite")
    assert r["result"].startswith("refused:") and "INT8" in r["result"]


@pytest.mark.parametrize("name", ["model_int8.onnx", "model_float.onnx"])
def test_opencv_4_reads_the_onnx_models_as_n_by_10_with_onnxruntimes_count(table, name):
    manifest, rows, _, _ = table
    r = rows[("OpenCV DNN", "4", name)]
    assert "output (" not in r["result"] and "refused" not in r["result"], r
    # OpenCV 4.x computes 3x3 convolutions with Winograd by default, in float between Quantize/Dequantize: a
    # value within float error of a rounding boundary can requantize 1 step apart from onnxruntime's integer
    # QLinearConv (the release: 1 answer of 10,000 differed). Within 0.1 pp, then.
    assert abs(r["correct"] - _correct(manifest, name)) <= 0.001 * manifest["test_images"]


def test_opencv_4_without_winograd_gives_onnxruntimes_count_on_the_int8_onnx(table):
    """What the README tells OpenCV 4.x users to do: net.enableWinograd(False)."""
    manifest, rows, _, _ = table
    r = rows[("OpenCV DNN, enableWinograd(False)", "4", "model_int8.onnx")]
    assert r["correct"] == _correct(manifest, "model_int8.onnx"), r


@pytest.mark.parametrize("name", ["model_int8.tflite", "model_float.tflite"])
def test_tflite_runtime_reproduces_the_reference_kernel_count(table, name):
    manifest, rows, _, _ = table
    r = next(r for (c, _, a), r in rows.items() if c == "tflite-runtime" and a == name)
    assert r["correct"] == _correct(manifest, name, "reference")


def test_the_table_goes_into_compat_md_and_between_the_readme_markers(table, tmp_path):
    _, _, out, rows = table
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{clients.README_START}\nold\n{clients.README_END}\n\nafter\n")
    text = clients.write(out, rows, readme)
    assert "| client | version | artifact | result |" in text and "MediaPipe" in text
    body = readme.read_text()
    assert "old" not in body and text in body and body.endswith("after\n")
    assert (out / "compat.md").read_text().endswith(text)
