"""LiteRT / tflite-runtime / onnxruntime behind one small interface.

The backend library is imported lazily, and only the one the model file needs, so a device with just
`ai-edge-litert` (or just `onnxruntime`) installed runs fine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import EdgeError
from .model_check import check_tflite
from .quant import QuantParams

# A TFLite flatbuffer carries the file identifier "TFL3" at bytes 4..8.
TFLITE_IDENTIFIER = b"TFL3"
EXPECTED_INPUT = (28, 28, 1)
# Bounds the tensor arena a single invoke needs; larger batches are run in chunks.
MAX_CHUNK = 256

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
}


class Backend(Protocol):
    """What the classifier needs from a runtime."""

    path: Path
    input_dtype: type  # np.float32, np.int8 or np.uint8
    input_shape: tuple  # e.g. (1, 28, 28, 1) or (None, 28, 28, 1)
    input_quant: QuantParams | None
    output_dtype: type
    output_shape: tuple
    output_quant: QuantParams | None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw model output for an NHWC batch of any size N (already in `input_dtype`)."""
        ...


def detect_format(model_path: str | Path) -> str:
    """'tflite' or 'onnx', from the file's content first and its extension second."""
    path = Path(model_path)
    if not path.exists():
        raise EdgeError(f"{path}: model file not found")
    if not path.is_file():
        raise EdgeError(f"{path}: is not a file")
    with path.open("rb") as f:
        head = f.read(8)
    if not head:
        raise EdgeError(f"{path}: model file is empty (0 bytes)")
    is_tflite = len(head) == 8 and head[4:8] == TFLITE_IDENTIFIER
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        if is_tflite:
            raise EdgeError(f"{path}: is a TFLite flatbuffer, not ONNX; rename it to .tflite")
        return "onnx"
    if suffix == ".tflite":
        if not is_tflite:
            raise EdgeError(
                f"{path}: is not a TFLite flatbuffer (no 'TFL3' identifier at byte 4); "
                "the file is corrupt or is another format"
            )
        return "tflite"
    if is_tflite:
        return "tflite"
    raise EdgeError(f"{path}: unknown model format; expected a .tflite or .onnx file")


def load_backend(model_path: str | Path, num_threads: int = 1, reference_kernels: bool = False) -> Backend:
    """Open the model with the runtime its content calls for and check it takes (N, 28, 28, 1).

    reference_kernels: run a .tflite on TFLite's built-in kernels without the default XNNPACK delegate;
    the int8 kernels differ, and so can a few answers."""
    path = Path(model_path)
    if num_threads < 1:
        raise EdgeError(f"{path}: num_threads must be at least 1, got {num_threads}")
    fmt = detect_format(path)
    backend: Backend = (TFLiteBackend(path, num_threads, reference_kernels) if fmt == "tflite"
                        else OnnxBackend(path, num_threads))
    _check_input_shape(backend)
    return backend


def _check_input_shape(backend: Backend) -> None:
    shape = backend.input_shape
    if len(shape) != 4 or tuple(shape[1:]) != EXPECTED_INPUT:
        shown = "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
        raise EdgeError(
            f"{backend.path}: model input shape is {shown}, expected (N, 28, 28, 1) grayscale NHWC"
        )
    if backend.input_dtype not in (np.float32, np.int8, np.uint8):
        raise EdgeError(f"{backend.path}: unsupported model input type {np.dtype(backend.input_dtype).name}")


def _quant_or_none(path: Path, which: str, dtype: type, quantization: tuple) -> QuantParams | None:
    scale, zero_point = float(quantization[0]), int(quantization[1])
    if dtype == np.float32:
        return None
    if scale <= 0.0:
        raise EdgeError(f"{path}: {which} is {np.dtype(dtype).name} but the model gives no quantization scale")
    return scale, zero_point


def _import_tflite_interpreter():
    """(Interpreter, OpResolverType) of ai-edge-litert if installed, else of tflite-runtime (same API)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        return Interpreter, OpResolverType
    except ModuleNotFoundError as e:
        # Only a missing top-level package falls through; a broken install is reported as is.
        if e.name not in ("ai_edge_litert", "ai_edge_litert.interpreter"):
            raise EdgeError(f"ai-edge-litert is installed but cannot be imported: {e}") from e
    try:
        from tflite_runtime.interpreter import Interpreter, OpResolverType

        return Interpreter, OpResolverType
    except ModuleNotFoundError as e:
        if e.name not in ("tflite_runtime", "tflite_runtime.interpreter"):
            raise EdgeError(f"tflite-runtime is installed but cannot be imported: {e}") from e
    raise EdgeError(
        "no TFLite runtime installed: pip install 'fashion-edge[tflite]' (ai-edge-litert) or tflite-runtime"
    )


class TFLiteBackend:
    """A .tflite model in LiteRT (ai-edge-litert) or tflite-runtime."""

    def __init__(self, path: Path, num_threads: int = 1, reference_kernels: bool = False) -> None:
        Interpreter, OpResolverType = _import_tflite_interpreter()
        check_tflite(path)       # what would crash LiteRT instead of raising (edge_runtime.model_check)
        self.path = path
        self.kernels = "reference" if reference_kernels else "default"
        resolver = (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if reference_kernels
                    else OpResolverType.AUTO)
        try:
            self._interp = Interpreter(model_path=str(path), num_threads=num_threads,
                                       experimental_op_resolver_type=resolver)
            self._interp.allocate_tensors()
        except SystemError as e:
            # tflite-runtime 2.14 is built against numpy 1.x and fails like this under numpy 2.
            import numpy
            raise EdgeError(f"{path}: the TFLite interpreter failed to start ({e}); tflite-runtime needs "
                            f"numpy<2 (numpy {numpy.__version__} is installed)") from e
        except (ValueError, RuntimeError) as e:
            raise EdgeError(f"{path}: cannot load TFLite model ({_one_line(e)}); the file is corrupt or truncated") from e
        try:
            inputs, outputs = self._interp.get_input_details(), self._interp.get_output_details()
        except ValueError as e:
            raise EdgeError(f"{path}: cannot load TFLite model ({_one_line(e)}); the file is corrupt") from e
        if len(inputs) != 1 or len(outputs) != 1:
            raise EdgeError(f"{path}: expected 1 input and 1 output, the model has {len(inputs)} and {len(outputs)}")
        inp, out = inputs[0], outputs[0]
        self._in_index, self._out_index = inp["index"], out["index"]
        signature = inp.get("shape_signature", inp["shape"])
        self.input_shape = tuple(None if d < 0 else int(d) for d in signature)
        self.input_dtype = np.dtype(inp["dtype"]).type
        self.input_quant = _quant_or_none(path, "input", self.input_dtype, inp["quantization"])
        out_signature = out.get("shape_signature", out["shape"])
        self.output_shape = tuple(None if d < 0 else int(d) for d in out_signature)
        self.output_dtype = np.dtype(out["dtype"]).type
        self.output_quant = _quant_or_none(path, "output", self.output_dtype, out["quantization"])
        self._batch = int(inp["shape"][0])

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=self.input_dtype)
        n = batch.shape[0]
        if n == 0:
            return np.empty((0, *(d or 0 for d in self.output_shape[1:])), self.output_dtype)
        # A model converted with a fixed batch of 1 is run once per sample rather than resized.
        step = 1 if self.input_shape[0] == 1 else MAX_CHUNK
        if n <= step:
            return self._invoke(batch)
        return np.concatenate([self._invoke(batch[i : i + step]) for i in range(0, n, step)])

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if n != self._batch:
            try:
                self._interp.resize_tensor_input(self._in_index, [n, *EXPECTED_INPUT], strict=False)
                self._interp.allocate_tensors()
            except (ValueError, RuntimeError) as e:
                raise EdgeError(f"{self.path}: model cannot run a batch of {n} ({_one_line(e)})") from e
            self._batch = n
        # A corrupt file can load and still fail here (a tensor without data, a shape that contradicts its
        # signature): found by tests/test_edge_fuzz.py.
        try:
            self._interp.set_tensor(self._in_index, batch)
            self._interp.invoke()
            return self._interp.get_tensor(self._out_index)  # a copy, safe to keep
        except (ValueError, RuntimeError) as e:
            raise EdgeError(f"{self.path}: inference failed ({_one_line(e)}); the file is corrupt") from e


def _onnx_errors(ort) -> tuple[type[BaseException], ...]:
    """onnxruntime's exception classes (they derive from Exception directly, not RuntimeError)."""
    state = getattr(getattr(ort, "capi", None), "onnxruntime_pybind11_state", None)
    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
             "InvalidProtobuf", "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail")
    found = tuple(getattr(state, n) for n in names if state is not None and hasattr(state, n))
    return (*found, RuntimeError, ValueError)


class OnnxBackend:
    """A .onnx model in onnxruntime (CPU).

    For int8/uint8 inputs the quantization parameters are the model's own metadata
    (`input_scale`, `input_zero_point`, `output_scale`, `output_zero_point`), written by the exporter.
    """

    def __init__(self, path: Path, num_threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ModuleNotFoundError as e:
            if e.name != "onnxruntime":
                raise EdgeError(f"onnxruntime is installed but cannot be imported: {e}") from e
            raise EdgeError(f"{path}: onnxruntime is not installed: pip install 'fashion-edge[onnx]'") from e
        self.path = path
        self._errors = _onnx_errors(ort)
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        # Fatal only: an error is raised to us and reported once, so onnxruntime's own log line of it (a
        # second, coloured line on stderr for a corrupt file) would only repeat it; warnings are noise here.
        options.log_severity_level = 4
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except self._errors as e:
            raise EdgeError(
                f"{path}: cannot load ONNX model ({_first_line(e)}); the file is corrupt or truncated"
            ) from e
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4
        try:
            self._describe()
        except UnicodeDecodeError as e:     # onnxruntime hands names and metadata over as they are in the file
            raise EdgeError(f"{path}: the model's names or metadata are not valid UTF-8 ({e}); the file is corrupt") from e

    def _describe(self) -> None:
        path = self.path
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise EdgeError(f"{path}: expected 1 input and 1 output, the model has {len(inputs)} and {len(outputs)}")
        inp, out = inputs[0], outputs[0]
        self._in_name, self._out_name = inp.name, out.name
        self.input_shape = tuple(d if isinstance(d, int) and d > 0 else None for d in inp.shape)
        self.output_shape = tuple(d if isinstance(d, int) and d > 0 else None for d in out.shape)
        self.input_dtype = self._dtype(inp.type, "input")
        self.output_dtype = self._dtype(out.type, "output")
        meta = self._session.get_modelmeta().custom_metadata_map
        self.metadata_props: dict[str, str] = dict(meta)
        self.input_quant = self._quant_from_metadata(meta, "input", self.input_dtype)
        self.output_quant = self._quant_from_metadata(meta, "output", self.output_dtype)

    def _dtype(self, onnx_type: str, which: str) -> type:
        if onnx_type not in _DTYPES:
            raise EdgeError(f"{self.path}: unsupported {which} type {onnx_type}; expected float, int8 or uint8")
        return _DTYPES[onnx_type]

    def _quant_from_metadata(self, meta: dict, which: str, dtype: type) -> QuantParams | None:
        if dtype == np.float32:
            return None
        scale_key, zp_key = f"{which}_scale", f"{which}_zero_point"
        if scale_key not in meta or zp_key not in meta:
            # The classifier may still find them in manifest.json; it raises if it cannot.
            return None
        try:
            scale, zero_point = float(meta[scale_key]), int(float(meta[zp_key]))
        except ValueError as e:
            raise EdgeError(f"{self.path}: metadata {scale_key}/{zp_key} are not numbers ({e})") from e
        if not scale > 0.0:
            raise EdgeError(f"{self.path}: metadata {scale_key} must be positive, got {meta[scale_key]}")
        return scale, zero_point

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=self.input_dtype)
        if batch.shape[0] == 0:
            return np.empty((0, *(d or 0 for d in self.output_shape[1:])), self.output_dtype)
        if self.input_shape[0] is None or batch.shape[0] == self.input_shape[0]:
            return self._invoke(batch)
        # A fixed-batch model: run it once per sample.
        return np.concatenate([self._invoke(batch[i : i + 1]) for i in range(batch.shape[0])])

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self._session.run([self._out_name], {self._in_name: batch}, self._run_options)[0]
        except self._errors as e:
            raise EdgeError(f"{self.path}: inference failed ({_first_line(e)})") from e


def _one_line(e: BaseException) -> str:
    """A runtime's message on one line (TFLite's error reporter joins several with newlines)."""
    return " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
