"""What an artifact costs whatever the CPU: file bytes, gzip bytes, and multiply-accumulates per image
counted from its own graph (not from the Keras model it came from, nor from its manifest)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np


def sizes(path: Path) -> dict:
    """File bytes and gzip -9 bytes (mtime 0, as the manifest counts them)."""
    raw = Path(path).read_bytes()
    return {"bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, 9, mtime=0))}


def graph_macs(path: Path) -> int:
    """Multiply-accumulates of one image through the model file's convolutions and matrix products."""
    return _tflite_macs(Path(path)) if Path(path).suffix == ".tflite" else _onnx_macs(Path(path))


def _tflite_macs(path: Path) -> int:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ModuleNotFoundError:
        from tflite_runtime.interpreter import Interpreter
    interp = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    shape = lambda i: [max(int(d), 1) for d in tensors[i]["shape"]]   # noqa: E731  (batch 1)
    total = 0
    for op in interp._get_ops_details():   # the only way LiteRT's Python API lists a graph's operators
        name, ins, outs = op["op_name"], [i for i in op["inputs"] if i >= 0], op["outputs"]
        if name == "CONV_2D":             # filter (O, kh, kw, I)
            total += int(np.prod(shape(outs[0]))) * int(np.prod(shape(ins[1])[1:]))
        elif name == "DEPTHWISE_CONV_2D":  # filter (1, kh, kw, O)
            total += int(np.prod(shape(outs[0]))) * int(np.prod(shape(ins[1])[1:3]))
        elif name == "FULLY_CONNECTED":    # weights (O, I)
            total += int(np.prod(shape(outs[0]))) * shape(ins[1])[-1]
    return total


def _onnx_macs(path: Path) -> int:
    import onnx
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    shapes = {t.name: list(t.dims) for t in g.initializer}
    for vi in (*g.input, *g.value_info, *g.output):
        shapes[vi.name] = [d.dim_value if d.dim_value > 0 else 1 for d in vi.type.tensor_type.shape.dim]
    total = 0
    for node in g.node:
        out = shapes.get(node.output[0])
        if out is None:
            continue
        if node.op_type in ("Conv", "ConvInteger"):          # weight (M, C/group, kh, kw)
            total += int(np.prod(out)) * int(np.prod(shapes[node.input[1]][1:]))
        elif node.op_type == "QLinearConv":
            total += int(np.prod(out)) * int(np.prod(shapes[node.input[3]][1:]))
        elif node.op_type in ("MatMul", "MatMulInteger", "Gemm"):
            total += int(np.prod(out)) * shapes[node.input[0]][-1]
        elif node.op_type == "QLinearMatMul":
            total += int(np.prod(out)) * shapes[node.input[0]][-1]
    return total
