"""The ONNX converters: float ONNX (tf2onnx from the tf_keras model), int8 ONNX by tf2onnx from the int8 .tflite
or by onnxruntime's static QDQ quantization, the ONNX checker and the rewrite for OpenCV DNN."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import tensorflow as tf
import tf2onnx
import tf_keras as keras


def to_onnx_float(model: keras.Model, path: Path, opset: int) -> Path:
    spec = [tf.TensorSpec((None, 28, 28, 1), tf.float32, name="input")]
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, output_path=str(path))
    return path


def to_onnx_from_tflite(tflite_path: Path, path: Path, opset: int, quant: dict) -> Path:
    """tf2onnx on the full-int8 .tflite: keeps TFLite's integer numbers; the input stays int8.

    onnxruntime does not expose a graph input's quantization, so scale and zero point go into
    the model's metadata, where edge_runtime reads them.
    """
    model, _ = tf2onnx.convert.from_tflite(str(tflite_path), opset=opset)
    meta = {"input_scale": quant["input"]["scale"], "input_zero_point": quant["input"]["zero_point"],
            "output_scale": quant["output"]["scale"], "output_zero_point": quant["output"]["zero_point"]}
    onnx.helper.set_model_props(model, {k: repr(v) for k, v in meta.items()})
    onnx.save(model, str(path))
    return path


def to_onnx_qdq(float_path: Path, path: Path, calibration: np.ndarray) -> Path:
    """onnxruntime static QDQ quantization of the float ONNX (float input; int8 inside)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter({"input": img[None]} for img in calibration)

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(float_path), str(path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True)
    return path


def check(path: Path) -> None:
    """The ONNX checker with full shape and type inference."""
    onnx.checker.check_model(str(path), full_check=True)


def for_opencv(path: Path) -> list[str]:
    """Rewrite the ONNX graph so OpenCV DNN 4.x reads it right; returns what was changed, one phrase each.

    Both rewrites leave onnxruntime's numbers unchanged:
    - a DequantizeLinear of a constant 1-D per-channel tensor that only an Add reads (the dense layer's int32
      bias; the convolutions take theirs as an input and are left alone) becomes its float result,
      (q - zero_point) * scale in float32, which is what onnxruntime computes. OpenCV 4.x turns it into a
      (C, 1) constant, so the dense layer's Add broadcasts (N, 10) + (10, 1) into (N, 10, 10);
    - Squeeze(axes=[2, 3]) of a 4-D tensor becomes Flatten(axis=1), the same thing for (N, C, 1, 1);
      OpenCV 4.x squeezes the wrong axes there and the classifier returns (N, 1, 10).
    """
    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    ranks = {v.name: len(v.type.tensor_type.shape.dim)
             for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    ranks.update({v.name: len(v.type.tensor_type.shape.dim) for v in graph.input})
    readers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    changes = []
    for node in list(graph.node):
        if node.op_type == "DequantizeLinear" and all(i in inits for i in node.input if i) \
                and readers.get(node.output[0]) == {"Add"}:
            q = onnx.numpy_helper.to_array(inits[node.input[0]])
            if q.ndim != 1 or q.size < 2:
                continue
            scale = onnx.numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            zp = (onnx.numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2]
                  else np.zeros_like(q))
            value = (q.astype(np.int64) - zp.astype(np.int64)).astype(np.float32) * scale
            graph.initializer.append(onnx.numpy_helper.from_array(value.astype(np.float32), node.output[0]))
            graph.node.remove(node)
            changes.append(f"bias {node.input[0]} dequantized to float")
        elif node.op_type == "Squeeze" and len(node.input) == 2 and node.input[1] in inits \
                and onnx.numpy_helper.to_array(inits[node.input[1]]).tolist() == [2, 3] \
                and ranks.get(node.input[0]) == 4:
            flatten = onnx.helper.make_node("Flatten", [node.input[0]], list(node.output), name=node.name, axis=1)
            position = list(graph.node).index(node)
            graph.node.remove(node)
            graph.node.insert(position, flatten)
            changes.append(f"{node.name}: Squeeze(axes=[2, 3]) as Flatten(axis=1)")
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    onnx.save(model, str(path))
    return changes
