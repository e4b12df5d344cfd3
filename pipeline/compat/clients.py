"""`python -m pipeline compat --exported DIR`: the release's artifacts in clients we did not write
(MediaPipe Tasks, OpenCV DNN 4.x and 5.x, tflite-runtime) and in our own runtimes (LiteRT with both kernel
sets, onnxruntime), on the test images → DIR/compat.md and compat.json, and the README's table.

Each outside client runs in a small venv of its own under <build>/compat-venvs (made once, reused), since
mediapipe, OpenCV 4.x and tflite-runtime (numpy<2) do not install beside TensorFlow 2.21.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from pipeline.errors import DataError

CLIENT_SCRIPT = Path(__file__).with_name("client_script.py")
# name → pip requirements of its venv (None: this venv)
VENVS = {
    "mediapipe": ["mediapipe"],
    "opencv4": ["opencv-python-headless<5", "numpy"],
    "tflite-runtime": ["tflite-runtime==2.14.*", "numpy<2"],
}
# (label, venv, client, artifacts): what is run on what
OUTSIDE = [
    ("MediaPipe Tasks ImageClassifier", "mediapipe", "mediapipe",
     ("model_int8_rgb.tflite", "model_int8.tflite", "model_float.tflite")),
    ("OpenCV DNN", "opencv4", "opencv", ("model_int8.onnx", "model_float.onnx", "model_float.tflite", "model_int8.tflite")),
    # OpenCV 4.x computes 3x3 convolutions with Winograd by default; its float error moved one requantization of
    # the release a step (11.49956 vs 11.50023) and one answer of 10,000. Without it: onnxruntime's answers.
    ("OpenCV DNN, enableWinograd(False)", "opencv4", "opencv-no-winograd", ("model_int8.onnx",)),
    ("OpenCV DNN", None, "opencv", ("model_int8.onnx", "model_float.onnx", "model_float.tflite", "model_int8.tflite")),
    ("tflite-runtime", "tflite-runtime", "tflite-runtime", ("model_int8.tflite", "model_float.tflite")),
]
README_START, README_END = "<!-- compat:start -->", "<!-- compat:end -->"


def venv_python(build_dir: Path, name: str, log=print) -> Path:
    """The python of the venv `name` under build_dir/compat-venvs, created (once per requirement set)."""
    folder = Path(build_dir) / "compat-venvs" / name
    python, stamp = folder / "bin" / "python", folder / ".requirements"
    wanted = "\n".join(VENVS[name])
    if not (python.exists() and stamp.is_file() and stamp.read_text() == wanted):
        log(f"creating {folder} ({', '.join(VENVS[name])})")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", *VENVS[name]], capture_output=True, text=True)
        if done.returncode != 0:
            raise DataError(f"cannot install {' '.join(VENVS[name])} into {folder}: "
                            f"{(done.stderr.strip().splitlines() or ['pip failed'])[-1]}")
        stamp.write_text(wanted)
    return python


def model_inputs(path: Path, images: np.ndarray) -> np.ndarray:
    """The exact tensor edge_runtime feeds this model: normalized and, when int8, quantized."""
    from edge_runtime.classifier import Classifier
    from edge_runtime.preprocess import normalize
    from edge_runtime.quant import quantize
    clf = Classifier(path, calibrated=False)
    x = normalize(images, clf.mean, clf.std)
    return quantize(x, clf.input_quant, clf.backend.input_dtype) if clf.input_quant else x.astype(np.float32)


def run_outside(python: Path, client: str, model: Path, images: np.ndarray, work: Path) -> dict:
    inputs = work / f"{model.stem}.npz"
    if not inputs.exists():
        x = images if model.name.endswith("_rgb.tflite") else model_inputs(model, images)
        np.savez(inputs, x=x, gray=images)
    done = subprocess.run([str(python), str(CLIENT_SCRIPT), client, str(model), str(inputs)],
                          capture_output=True, text=True, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"the client crashed (exit {done.returncode}): "
                         f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}", "version": "?"}
    return json.loads(lines[-1])


def result_text(r: dict, y: np.ndarray) -> str:
    if "error" in r:       # OpenCV's errors start with the source path of the check that failed
        return "refused: " + r["error"].rsplit("error: ", 1)[-1]
    pred = np.asarray(r["pred"])
    correct = int((pred == y).sum())
    notes = [] if r.get("shape") in (None, ["N", "10"]) else [f"output ({', '.join(r['shape'])})"]
    if "label names" in " ".join(r.get("shape", [])):
        notes = ["no label names from the model"]
    return f"{correct:,}/{len(y):,} ({correct / len(y):.2%})" + (f"; {'; '.join(notes)}" if notes else "")


def run(exported: Path, build_dir: Path = Path("build"), clients: list[str] | None = None, log=print) -> list[dict]:
    """Every (client, artifact) pair: rows of client, version, artifact, result, correct (None if refused)."""
    from importlib.metadata import version

    from pipeline.data import fashion_mnist
    from pipeline.evaluate import parity
    exported = Path(exported)
    if not (exported / "manifest.json").is_file():
        raise DataError(f"{exported}: no manifest.json; give the folder of an export")
    manifest = json.loads((exported / "manifest.json").read_text())
    _, _, x_test, y_test, _ = fashion_mnist.load_raw()
    n = int(manifest.get("test_images", len(y_test)))
    images, y = x_test[:n], y_test[:n]
    files = [a["file"] for a in manifest["artifacts"]]
    rows = []

    def add(client, ver, artifact, r):
        pred = np.asarray(r.get("pred", []))
        rows.append({"client": client, "version": ver, "artifact": artifact, "result": result_text(r, y),
                     "correct": None if "error" in r or len(pred) != len(y) else int((pred == y).sum())})
        log(f"{client} {ver} on {artifact}: {rows[-1]['result']}")

    ours = clients is None or "ours" in clients
    for name in files if ours else []:
        rgb = name.endswith("_rgb.tflite")
        evaluate = parity.evaluate_rgb if rgb else parity.evaluate
        if name.endswith(".tflite"):
            for kernels, label in (("default", "LiteRT, default (XNNPACK)"), ("reference", "LiteRT, built-in reference kernels")):
                r = evaluate(exported / name, images, y, y, kernels=kernels)
                add(label, version("ai-edge-litert"), name, {"pred": r["predictions"].tolist()})
        else:
            r = evaluate(exported / name, images, y, y)
            add("onnxruntime", version("onnxruntime"), name, {"pred": r["predictions"].tolist()})
    with tempfile.TemporaryDirectory() as tmp:
        for label, venv, client, artifacts in OUTSIDE:
            if clients is not None and (venv or "local") not in clients:
                continue
            if venv is None:
                try:
                    import cv2  # noqa: F401 - only to know whether this venv has OpenCV
                except ModuleNotFoundError:
                    continue
            python = Path(sys.executable) if venv is None else venv_python(build_dir, venv, log)
            for name in artifacts:
                if name in files:
                    r = run_outside(python, client, exported / name, images, Path(tmp))
                    add(label, r.get("version", "?"), name, r)
    return rows


def table(rows: list[dict], n: int) -> str:
    lines = [f"Measured by `python -m pipeline compat` on {n:,} Fashion-MNIST test images (top-1 correct).", "",
             "| client | version | artifact | result |", "|---|---|---|---|"]
    lines += [f"| {r['client']} | {r['version']} | `{r['artifact']}` | {r['result'].replace('|', '/')} |" for r in rows]
    return "\n".join(lines) + "\n"


def write(exported: Path, rows: list[dict], readme: Path | None = None) -> str:
    """compat.md and compat.json into `exported`; the table between the compat markers of `readme`."""
    manifest = json.loads((Path(exported) / "manifest.json").read_text())
    text = table(rows, int(manifest.get("test_images", 10000)))
    (Path(exported) / "compat.md").write_text("# Compatibility\n\n" + text)
    (Path(exported) / "compat.json").write_text(json.dumps(rows, indent=1) + "\n")
    if readme is not None:
        body = Path(readme).read_text()
        if README_START not in body or README_END not in body:
            raise DataError(f"{readme}: no {README_START} … {README_END} markers to put the table between")
        head, rest = body.split(README_START, 1)
        _, tail = rest.split(README_END, 1)
        Path(readme).write_text(f"{head}{README_START}\n{text}{README_END}{tail}")
    return text
