"""One client we did not write, run on one artifact; executed by pipeline/compat/clients.py with the python of a
small venv that holds only that client (and numpy), so it must import nothing from this project.

    python client_script.py CLIENT MODEL INPUTS.npz  →  one JSON line: version, output shape, predictions

INPUTS.npz holds `x`: the model's input as the runtime would give it (normalized and, for an int8 model,
quantized), and `gray`: the raw 0..255 images, for clients that take pictures (MediaPipe).
"""
from __future__ import annotations

import json
import sys

import numpy as np

CHUNK = 500        # OpenCV allocates every layer's output for the whole batch


def opencv(model: str, x: np.ndarray, winograd: bool = True) -> tuple[str, list, np.ndarray]:
    import cv2
    if model.endswith(".tflite"):
        net = cv2.dnn.readNetFromTFLite(model)
        x = x.transpose(0, 3, 1, 2)      # OpenCV's TFLite importer takes NCHW blobs and converts inside
    else:
        net = cv2.dnn.readNetFromONNX(model)
    if not winograd:
        net.enableWinograd(False)        # OpenCV 4.x: direct 3x3 convolutions (Winograd's float error moves roundings)
    outs = []
    for i in range(0, len(x), CHUNK):
        net.setInput(np.ascontiguousarray(x[i : i + CHUNK]))
        outs.append(net.forward())
    y = np.concatenate(outs)
    pred = y.argmax(1) if y.ndim == 2 else np.full(len(x), -1)     # (N, 10, 10) is no answer
    return cv2.__version__, ["N", *y.shape[1:]], pred

def mediapipe(model: str, gray: np.ndarray) -> tuple[str, list, np.ndarray]:
    from importlib.metadata import version

    import mediapipe as mp
    from mediapipe.tasks import python as tasks
    from mediapipe.tasks.python import vision
    options = vision.ImageClassifierOptions(base_options=tasks.BaseOptions(model_asset_path=model), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        pred, names = [], set()
        for img in gray:      # a gray picture as the RGB frame a camera would give
            rgb = np.ascontiguousarray(np.repeat(img[..., None], 3, axis=-1))
            top = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)).classifications[0].categories[0]
            pred.append(top.index)
            names.add(top.category_name)
    # MediaPipe gives one category per label; the names can only have come from the model's metadata.
    named = bool(names - {"", None})
    return version("mediapipe"), ["N", "10" if named else "10 (no label names)"], np.array(pred)


def tflite_runtime(model: str, x: np.ndarray) -> tuple[str, list, np.ndarray]:
    from importlib.metadata import version

    from tflite_runtime.interpreter import Interpreter
    it = Interpreter(model_path=model)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], list(x.shape), strict=False)
    it.allocate_tensors()
    it.set_tensor(inp["index"], x.astype(inp["dtype"]))
    it.invoke()
    y = it.get_tensor(out["index"])
    return version("tflite-runtime"), ["N", *y.shape[1:]], y.argmax(1)


CLIENTS = {"opencv": opencv, "opencv-no-winograd": lambda model, x: opencv(model, x, winograd=False),
           "mediapipe": mediapipe, "tflite-runtime": tflite_runtime}


def main(argv: list[str]) -> int:
    client, model, inputs = argv
    data = np.load(inputs)
    try:
        fed = data["gray"] if client == "mediapipe" else data["x"]
        version, shape, pred = CLIENTS[client](model, fed)
        print(json.dumps({"version": version, "shape": [str(d) for d in shape], "pred": pred.tolist()}))
    except Exception as e:  # noqa: BLE001 - a client that refuses the model is a result, reported as such
        print(json.dumps({"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}",
                          "version": _version(client)}))
    return 0


def _version(client: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    if client.startswith("opencv"):
        import cv2
        return cv2.__version__
    for dist in {"opencv": ("opencv-python-headless", "opencv-contrib-python", "opencv-python"),
                 "opencv-no-winograd": ("opencv-python-headless",),
                 "mediapipe": ("mediapipe",), "tflite-runtime": ("tflite-runtime",)}[client]:
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
