"""Real test models for the edge_runtime tests, built from real Fashion-MNIST images.

Run as a script (`python tests/edge_models.py OUT_DIR`) it trains a small tf_keras CNN on 3000
training images and writes model_float.tflite, model_int8.tflite, model_float.onnx, model_int8.onnx and
a manifest.json (schema 1, docs/architecture.md) into OUT_DIR. The `models` fixture (tests/conftest.py) calls it
in a subprocess so that the test process itself never imports TensorFlow. Also home of the IDX reader the tests use (not `pipeline`'s:
the runtime's tests stay independent of the training side).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from edge_runtime.classifier import file_sha256
from edge_runtime.labels import FASHION_MNIST_LABELS

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
REPO = Path(__file__).resolve().parent.parent
# The pipeline's release folder; EDGE_EXPORTED_DIR points the tests at another export.
EXPORTED = Path(os.environ.get("EDGE_EXPORTED_DIR", REPO / "exported"))
MODEL_FILES = ("model_float.tflite", "model_int8.tflite", "model_float.onnx", "model_int8.onnx")
LABELS = list(FASHION_MNIST_LABELS)
MEAN, STD = 0.2860, 0.3530
TRAIN_IMAGES = 3000


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file (big-endian magic, dims as uint32, then uint8 data) → numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte elements
        raise ValueError(f"{path}: not a uint8 IDX file (magic {magic:#010x})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist(split: str = "t10k", n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) uint8) from the real dataset; split 'train' or 't10k'."""
    images = read_idx(DATA_DIR / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(DATA_DIR / f"{split}-labels-idx1-ubyte.gz")
    return images[:n], labels[:n]


def exported_models_dir() -> Path | None:
    """The pipeline's exported/ folder once it holds a manifest and all four models, else None."""
    if (EXPORTED / "manifest.json").is_file() and all((EXPORTED / f).is_file() for f in MODEL_FILES):
        return EXPORTED
    return None


def garment_video(path: Path, classes: tuple[int, ...] = (1, 8), hold: int = 15, turns: int = 4) -> Path:
    """An MJPG .avi at 30 fps: a dataset garment of each of `classes` in turn (trousers, bags), drawn dark on a
    light 320×240 frame, `hold` frames each, `turns` times round. Needs OpenCV."""
    import cv2

    images, labels = fashion_mnist("t10k", 200)
    picks = [images[np.flatnonzero(labels == c)[0]] for c in classes]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (320, 240))
    for k in range(turns * len(classes) * hold):
        frame = np.full((240, 320, 3), 235, np.uint8)
        garment = cv2.resize(255 - picks[(k // hold) % len(classes)], (200, 200), interpolation=cv2.INTER_CUBIC)
        frame[20:220, 60:260] = np.minimum(frame[20:220, 60:260], garment[..., None])
        writer.write(frame)
    writer.release()
    return path


def build_in_subprocess(out_dir: Path) -> Path:
    """`build` into `out_dir` in a fresh process (TensorFlow stays out of the test process); returns `out_dir`."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)   # this checkout's packages
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(out_dir)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": path},
    )
    if done.returncode != 0:
        raise RuntimeError(f"building test models failed:\n{done.stderr[-4000:]}")
    return out_dir


def build(out_dir: Path) -> None:
    """Train, convert and write the four models and their manifest (runs in its own process)."""
    import pipeline  # noqa: F401  (the TensorFlow environment, before TensorFlow is imported: tf_keras, not Keras 3)
    import tensorflow as tf
    import tf_keras as keras

    tf.keras.utils.set_random_seed(0)
    x, y = fashion_mnist("train", TRAIN_IMAGES)
    xf = ((x.astype(np.float32) / 255.0 - MEAN) / STD)[..., None]
    model = keras.Sequential([
        keras.layers.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(xf, y, epochs=3, batch_size=64, verbose=0)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model_float.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())

    def representative():
        for i in range(0, 200):
            yield [xf[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    int8_path = out_dir / "model_int8.tflite"
    int8_path.write_bytes(converter.convert())

    import onnx
    import tf2onnx

    spec = [tf.TensorSpec([None, 28, 28, 1], tf.float32, name="input")]
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(out_dir / "model_float.onnx"))

    interpreter = tf.lite.Interpreter(model_path=str(int8_path))
    in_q = interpreter.get_input_details()[0]["quantization"]
    out_q = interpreter.get_output_details()[0]["quantization"]
    onnx_int8, _ = tf2onnx.convert.from_tflite(str(int8_path), opset=17)
    # The runtime reads an int8 ONNX model's quantization parameters from its own metadata.
    for key, value in {
        "input_scale": in_q[0], "input_zero_point": in_q[1],
        "output_scale": out_q[0], "output_zero_point": out_q[1],
    }.items():  # fmt: skip
        prop = onnx_int8.metadata_props.add()
        prop.key, prop.value = key, repr(value)
    onnx.save(onnx_int8, str(out_dir / "model_int8.onnx"))

    quant = {"input": {"dtype": "int8", "scale": float(in_q[0]), "zero_point": int(in_q[1])},
             "output": {"dtype": "int8", "scale": float(out_q[0]), "zero_point": int(out_q[1])}}
    artifacts = []
    for name in MODEL_FILES:
        path = out_dir / name
        entry = {"file": name, "format": path.suffix[1:], "precision": "int8" if "int8" in name else "float32",
                 "bytes": path.stat().st_size, "sha256": file_sha256(path)}
        if "int8" in name:
            entry.update(quant)
        artifacts.append(entry)
    manifest = {
        "schema": 1,
        "created": "test fixture",
        "labels": LABELS,
        "input": {"height": 28, "width": 28, "channels": 1, "layout": "NHWC",
                  "normalization": {"mean": MEAN, "std": STD}},
        "artifacts": artifacts,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))

    # A model the runtime must refuse: it takes 32×32 images. Kept out of the manifest's folder.
    wrong = keras.Sequential([keras.layers.Input((32, 32, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    (out_dir / "wrong_shape").mkdir(exist_ok=True)
    (out_dir / "wrong_shape" / "model.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(wrong).convert())
    spec = [tf.TensorSpec([None, 32, 32, 1], tf.float32, name="input")]
    tf2onnx.convert.from_keras(wrong, input_signature=spec, opset=17,
                               output_path=str(out_dir / "wrong_shape" / "model.onnx"))


if __name__ == "__main__":
    build(Path(sys.argv[1]))
