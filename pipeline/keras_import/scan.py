"""What a model file holds, read before any Keras loader or TensorFlow function touches it (issue #29).

A model file is a program: a Lambda layer is marshalled Python bytecode that `load_model` and `predict`
run, a layer Keras does not ship is code from elsewhere, and a SavedModel's functions can write files or
call back into Python. `scan` reads the model config (a .keras archive's config.json, an HDF5 file's
`model_config`, a SavedModel's keras_metadata.pb) and every graph and library function of a SavedModel,
executing nothing: json, zipfile and h5py for .keras and .h5 (TensorFlow is not imported), the
SavedModel proto for a folder. What would run on this machine is refused unless the user says they trust
the file (`export --trust-model`); a file too damaged to read is an error either way.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import io
import json
import os
import pickle
import re
import select
import signal
import time
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pipeline.errors import ModelError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
CONTAINERS = frozenset({"Sequential", "Functional", "Model"})
# Keys whose values are layers (the rest of a config holds plain objects: initializers, dtype policies...).
LAYER_KEYS = frozenset({"layers", "layer", "forward_layer", "backward_layer", "cell", "cells"})
# Exported by keras.layers / tf_keras.layers, and still code from outside the file's built-in layers:
# a Python function, a SavedModel, a PyTorch/JAX module loaded from a path or a module the config names.
NOT_BUILTIN = frozenset({"Lambda", "Layer", "Wrapper", "InputSpec", "TFSMLayer", "TorchModuleWrapper",
                         "JaxLayer", "FlaxLayer", "AbstractRNNCell", "PreprocessingLayer", "Input"})
# Serialized values that are not layers or Keras API objects: tensors, shapes and policies Keras writes itself.
INTERNAL_OBJECTS = frozenset({"__keras_tensor__", "__tensor__", "__numpy__", "__typespec__", "__bytes__",
                              "__ellipsis__", "__slice__", "__tuple__", "DTypePolicy", "Policy",
                              "FloatDTypePolicy", "QuantizedDTypePolicy", "MeanMetricWrapper", "Functional",
                              "Sequential", "Model", "TensorShape", "InputSpec", "TypeSpec"})
# tf_keras writes `x / 255.0` in a functional model as a TFOpLambda calling tf.<function>: arithmetic only.
TF_OP_PREFIXES = ("math.", "nn.", "__operators__.", "linalg.", "image.resize", "compat.v1.transpose")
TF_OP_NAMES = frozenset({"reshape", "transpose", "cast", "concat", "stack", "expand_dims", "squeeze",
                         "clip_by_value", "identity", "split", "pad", "where", "ones_like", "zeros_like"})
# Plausibility bounds, far beyond any 28×28 classifier: a file past them is damaged, not a model.
MAX_DIM = 1 << 16                 # any input dimension, units, filters, kernel size
MAX_MEMBER_BYTES = 1 << 30        # one member of a .keras archive, uncompressed
MAX_JSON_BYTES = 64 << 20
MAX_DEPTH = 200                   # nesting of a config


def _ops(*names: str) -> frozenset[str]:
    return frozenset(n for group in names for n in group.split())


# What a graph op would do outside the model, by op. The start is TensorFlow's own `saved_model_cli scan`
# denylist (tensorflow/python/tools/saved_model_cli.py, _OP_DENYLIST = {WriteFile, ReadFile, PrintV2});
# the rest is from reading tf.raw_ops (TF 2.21: 1,462 ops) for files, Python, printing, the network.
DENYLIST: dict[str, frozenset[str]] = {
    "calls back into Python": _ops("PyFunc PyFuncStateless EagerPyFunc GeneratorDataset"),
    "reads or writes files": _ops(
        "ReadFile WriteFile MatchingFiles ImmutableConst FileSystemSetConfiguration RecordInput "
        "InitializeTableFromTextFile InitializeTableFromTextFileV2 LoadAndRemapMatrix GenerateVocabRemapping "
        "DecodeProtoV2 EncodeProto "     # descriptor_source may name a file on disk
        "Save SaveSlices SaveV2 Restore RestoreSlice RestoreV2 MergeV2Checkpoints "
        "TFRecordReader TFRecordReaderV2 TextLineReader TextLineReaderV2 WholeFileReader WholeFileReaderV2 "
        "FixedLengthRecordReader FixedLengthRecordReaderV2 LMDBReader IdentityReader IdentityReaderV2 "
        "TFRecordDataset TFRecordDatasetV2 TextLineDataset FixedLengthRecordDataset FixedLengthRecordDatasetV2 "
        "LMDBDataset ExperimentalLMDBDataset MatchingFilesDataset ExperimentalMatchingFilesDataset "
        "CSVDataset CSVDatasetV2 ExperimentalCSVDataset SqlDataset ExperimentalSqlDataset "
        "SnapshotDataset SnapshotDatasetV2 SnapshotDatasetReader SnapshotNestedDatasetReader SnapshotChunkDataset "
        "ListSnapshotChunksDataset SaveDataset SaveDatasetV2 LoadDataset DistributedSave CacheDataset "
        "CacheDatasetV2 DatasetToTFRecord ExperimentalDatasetToTFRecord"),
    "prints to the console or a file": _ops("Print PrintV2"),
    "writes summaries or debug dumps to files or servers": _ops(
        "CreateSummaryFileWriter CreateSummaryDbWriter SummaryWriter WriteSummary WriteScalarSummary "
        "WriteHistogramSummary WriteImageSummary WriteAudioSummary WriteGraphSummary WriteRawProtoSummary "
        "FlushSummaryWriter CloseSummaryWriter ImportEvent StatsAggregatorSetSummaryWriter "
        "DebugIdentity DebugIdentityV2 DebugIdentityV3 DebugNanCount DebugNumericSummary DebugNumericSummaryV2"),
    "talks to other machines or processes": _ops(
        "Rpc TryRpc RpcClient RpcCall RpcServer RemoteCall Send Recv _Send _Recv _HostSend _HostRecv "
        "DataServiceDataset DataServiceDatasetV2 DataServiceDatasetV3 DataServiceDatasetV4 "
        "RegisterDataset RegisterDatasetV2"),
}
# Families matched by name, so a variant added to TensorFlow later is caught as well.
DENY_PATTERNS = {
    "reads or writes files": re.compile(r"^Reader|Reader(V2)?$"),
    "writes summaries or debug dumps to files or servers": re.compile(r"^(?!BoostedTrees).*Summary|^Debug"),
    "talks to other machines or processes": re.compile(r"^Collective|Rpc"),
}
# The saver's own functions (meta_graph.saver_def) read and write variables/ with these; TensorFlow runs
# them to restore the checkpoint from the path it feeds to saver_filename, never from a model's signature.
SAVER_OPS = {"save": _ops("SaveV2 MergeV2Checkpoints"), "restore": _ops("RestoreV2")}


def denied(op: str) -> str | None:
    """What `op` would do outside the model ('reads or writes files', ...), None for a model's own math."""
    for why, ops in DENYLIST.items():
        if op in ops:
            return why
    for why, pattern in DENY_PATTERNS.items():
        if pattern.search(op):
            return why
    return None


@dataclass
class Refusal:
    what: str                 # "Lambda layer 'lambda'", "op WriteFile in function __inference_serve_8366"
    why: str                  # the rest of the sentence: what would run on this machine

    def __str__(self) -> str:
        return f"{self.what} {self.why}"


@dataclass
class Contents:
    """What a model file holds, read without loading it."""

    path: Path
    format: str                                       # as importer.FORMATS
    layers: Counter = field(default_factory=Counter)  # layer class → count, nested models included
    ops: Counter = field(default_factory=Counter)     # graph op → count over the graph and its functions
    refused: list[Refusal] = field(default_factory=list)

    @property
    def carried(self) -> list[str]:
        return [r.what for r in self.refused]

    def error(self) -> ModelError:
        """The one-line refusal: the file, the first thing refused and why, how many more."""
        first, rest = self.refused[0], self.refused[1:]
        more = f" (and {len(rest)} more: {', '.join(r.what for r in rest[:3])}{', …' if len(rest) > 3 else ''})" \
            if rest else ""
        return ModelError(f"{self.path.name}: {first}{more}; refused: give --trust-model only if you wrote this "
                          "file or trust its code")


# --- the allow-lists, read from the installed Keras packages' sources (nothing of theirs is run) ----------

def _exported_names(package: str, *modules: str) -> set[str]:
    """Names an installed package's API modules import (its generated __init__.py files), parsed, not run."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return set()
    root = Path(next(iter(spec.submodule_search_locations)))
    names: set[str] = set()
    for module in modules:
        init = root.joinpath(*module.split("/"), "__init__.py")
        if not init.is_file():
            continue
        for node in ast.walk(ast.parse(init.read_text())):
            if isinstance(node, ast.ImportFrom):
                names.update(a.asname or a.name for a in node.names)
    return names


_API = ("initializers", "regularizers", "constraints", "activations", "losses", "metrics", "optimizers",
        "dtype_policies", "mixed_precision", "models", "optimizers/schedules")


@lru_cache(maxsize=1)
def builtin_layers() -> frozenset[str]:
    """Class names of the built-in layers of the installed Keras 3 and tf_keras (public layers API)."""
    names = (_exported_names("keras", "layers") | _exported_names("tf_keras", "api/_v2/keras/layers",
                                                                   "api/_v2/keras/layers/experimental",
                                                                   "api/_v2/keras/layers/experimental/preprocessing"))
    if not names:
        raise ModelError("neither keras nor tf_keras is installed: cannot tell built-in layers from others")
    return frozenset(n for n in names if n[:1].isupper()) - NOT_BUILTIN


@lru_cache(maxsize=1)
def builtin_objects() -> frozenset[str]:
    """Names of Keras's own initializers, regularizers, constraints, activations, losses, metrics, optimizers."""
    names = _exported_names("keras", *_API) | _exported_names("tf_keras", *(f"api/_v2/keras/{m}" for m in _API))
    return frozenset(names | INTERNAL_OBJECTS | builtin_layers())


def _keras_module(module) -> bool:
    return module is None or module == "keras" or str(module).startswith(("keras.", "tf_keras"))


# --- the config: layers and objects, recursively ----------------------------------------------------------

class _ConfigScan:
    def __init__(self, contents: Contents):
        self.c = contents

    def refuse(self, what: str, why: str) -> None:
        if what not in self.c.carried:
            self.c.refused.append(Refusal(what, why))

    def walk(self, value, layer_position: bool, owner: str | None, key: str | None, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise ModelError(f"{self.c.path}: the model config is nested {MAX_DEPTH} levels deep: damaged")
        if isinstance(value, list):
            for v in value:
                self.walk(v, layer_position, owner, key, depth + 1)
            return
        if layer_position and value is not None and not (
                isinstance(value, dict) and isinstance(value.get("class_name"), str)
                and isinstance(value.get("config", {}), dict)):
            # The loaders and the rebuild index these without checking: a damaged file, said as such.
            raise ModelError(f"{self.c.path}: {key or 'the model'}{f' of layer {owner!r}' if owner else ''} is "
                             f"{type(value).__name__} {str(value)[:40]!r}, not a serialized layer: the config is damaged")
        if not isinstance(value, dict):
            return
        cls = value.get("class_name")
        if isinstance(cls, str):
            if layer_position:
                owner = self.layer(value, cls)
                if cls == "Lambda":
                    return            # refused whole: its function is the bytecode
            else:
                self.obj(value, cls, owner, key)
        elif "function_type" in value:      # tf_keras's serialized Python function, outside a Lambda
            self.refuse(f"Python function in layer '{owner}'", "holds Python bytecode that loading or running "
                        "the model would execute on this machine")
        for k, v in value.items():
            if k in ("module", "registered_name", "class_name"):
                continue
            self.walk(v, isinstance(k, str) and k in LAYER_KEYS, owner, k if isinstance(k, str) else key, depth + 1)

    def layer(self, entry: dict, cls: str) -> str:
        """Check one serialized layer; returns its name, the owner of the objects inside it."""
        config = entry.get("config") if isinstance(entry.get("config"), dict) else {}
        name = str(config.get("name") or entry.get("name") or "?")
        self.c.layers[cls] += 1
        module, registered = entry.get("module"), entry.get("registered_name")
        self._plausible(name, cls, config)
        if cls == "Lambda":
            self.refuse(f"Lambda layer '{name}'", "holds Python bytecode that loading or running the model "
                        "would execute on this machine")
        elif cls in ("TFOpLambda", "SlicingOpLambda"):
            fn = str(config.get("function", ""))
            if not (fn.startswith(TF_OP_PREFIXES) or fn in TF_OP_NAMES):
                self.refuse(f"layer '{name}' ({cls} calling tf.{fn})", "calls a TensorFlow function that is not "
                            "arithmetic; running the model would call it on this machine")
        elif not _keras_module(module) or registered not in (None, cls) or ">" in cls:
            self.refuse(f"layer '{name}' ({registered or cls}{f', module {module}' if module else ''})",
                        "is not a built-in Keras layer: its code, from outside Keras, would run on this machine")
        elif cls not in builtin_layers() and cls not in CONTAINERS:
            self.refuse(f"layer '{name}' ({cls})", "is not a built-in layer of Keras 3 or tf_keras: loading it "
                        "would run code from outside Keras on this machine")
        return name

    def obj(self, value: dict, cls: str, owner: str | None, key: str | None) -> None:
        module, registered = value.get("module"), value.get("registered_name")
        where = f"{key or 'an option'} of layer '{owner}'" if owner else f"{key or 'the model config'}"
        if cls == "__lambda__" or cls == "Lambda":
            self.refuse(f"Python function in {where}", "holds Python bytecode that loading or running the model "
                        "would execute on this machine")
            return
        if cls == "function":          # Keras 3: {"module": "keras.activations", "config": "relu", ...}
            ok = _keras_module(module) and module is not None and value.get("config") in builtin_objects()
        else:
            # tf_keras writes its own optimizers as "Custom>Adam": Keras's class, not the user's.
            plain = cls[len("Custom>"):] if cls.startswith("Custom>") else cls
            ok = (_keras_module(module) and ">" not in plain and registered in (None, cls)
                  and plain in builtin_objects())
        if not ok:
            shown = value.get("config") if cls == "function" else registered if isinstance(registered, str) \
                and registered else cls
            self.refuse(f"custom object {shown!r} ({where})", "is not Keras's own: its code would run on this "
                        "machine when the model is loaded")

    def _plausible(self, name: str, cls: str, config: dict) -> None:
        for k in ("batch_input_shape", "batch_shape", "input_shape", "units", "filters", "kernel_size",
                  "pool_size", "output_dim", "input_dim", "target_shape", "depth_multiplier", "key_dim"):
            v = config.get(k)
            if isinstance(v, dict) and v.get("class_name") == "__tuple__":    # tf_keras's SavedModel metadata
                v = v.get("items")
            for d in v if isinstance(v, list) else [v]:
                if isinstance(d, int) and not isinstance(d, bool) and not -1 <= d <= MAX_DIM:
                    raise ModelError(f"{self.c.path}: layer '{name}' ({cls}) declares {k}={v!r}, not a plausible "
                                     "size: the config is damaged")

    def check_activation_strings(self, value, depth: int = 0) -> None:
        """tf_keras writes a built-in activation as its name; any other name is a custom function."""
        if depth > MAX_DEPTH:
            return
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "activation" and isinstance(v, str) and v not in builtin_objects():
                    self.refuse(f"custom activation {v!r}", "is not Keras's own: its code would run on this "
                                "machine when the model is loaded")
                self.check_activation_strings(v, depth + 1)
        elif isinstance(value, list):
            for v in value:
                self.check_activation_strings(v, depth + 1)


def _scan_config(contents: Contents, config, top_is_layer: bool = True) -> None:
    s = _ConfigScan(contents)
    s.walk(config, top_is_layer, None, None)
    s.check_activation_strings(config)


def _json(path: Path, raw: bytes | str, what: str):
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:          # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ModelError(f"{path}: {what} is not valid JSON ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__}): "
                         "the file is damaged") from None


# --- .keras and .h5 ------------------------------------------------------------------------------------

H5_SECONDS = 30.0       # reading a small model's HDF5 takes well under a second


def _read_h5(path: Path, source, limit: int) -> dict:
    """Everything a Keras loader reads from an HDF5 model: every attribute and every dataset, after checking
    the datasets' declared sizes; returns the three top-level attributes the scan needs, as text."""
    import h5py
    with h5py.File(source, "r") as h:
        _check_h5_datasets(path, h, limit)
        out = {}
        for k in ("model_config", "training_config", "keras_version"):
            if k in h.attrs:
                v = h.attrs[k]
                out[k] = v.decode() if isinstance(v, bytes) else v if isinstance(v, str) else repr(v)[:80]

        def touch(name, obj):
            for key in obj.attrs:
                obj.attrs[key]
            if isinstance(obj, h5py.Dataset):
                obj[()]
        [h.attrs[k] for k in h.attrs]
        h.visititems(touch)
        return out


def _isolated(path: Path, fn, *args):
    """`fn(*args)` in a forked child: a damaged HDF5 file can make the HDF5 library loop forever or crash,
    which no Python exception reaches; here that is a ModelError naming the file."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                       # the child: answer through the pipe, never return into the caller
        try:
            os.close(read)
            try:
                answer = ("ok", fn(*args))
            except ModelError as e:
                answer = ("model", str(e))
            except Exception as e:     # noqa: BLE001 - any failure of the library on this file is the file's
                answer = ("error", _first_line(e))
            with os.fdopen(write, "wb") as f:
                f.write(pickle.dumps(answer))
        finally:
            os._exit(0)
    os.close(write)
    chunks, deadline = [], time.monotonic() + H5_SECONDS
    with os.fdopen(read, "rb") as f:
        while True:
            ready, _, _ = select.select([f], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise ModelError(f"{path}: reading the HDF5 data did not finish in {H5_SECONDS:g} s: the file is damaged")
            chunk = os.read(f.fileno(), 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        why = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
        raise ModelError(f"{path}: the HDF5 library stopped ({why}) reading the file: the file is damaged")
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "model":
        raise ModelError(value)
    if kind == "error":
        raise ModelError(f"{path}: a damaged HDF5 file ({value})")
    return value


def _check_h5_datasets(path: Path, h5, limit: int) -> None:
    """Weights whose declared size is far beyond the file's: reading them would allocate that much."""
    import h5py
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            size = obj.dtype.itemsize
            for d in obj.shape or ():
                size *= d
            if size > limit:
                found.append((name, obj.shape))
    h5.visititems(visit)
    if found:
        name, shape = found[0]
        raise ModelError(f"{path}: weights '{name}' declare shape {tuple(shape)}, far more than the file holds: "
                         "the file is damaged")


def _h5_limit(nbytes: int) -> int:
    return 8 * nbytes + (16 << 20)


def _scan_keras3(path: Path, contents: Contents) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            infos = {i.filename: i for i in z.infolist()}
            if "config.json" not in infos:
                raise ModelError(f"{path}: a zip archive without config.json, not a Keras 3 .keras file")
            for info in infos.values():
                if info.file_size > MAX_MEMBER_BYTES or info.file_size > 200 * info.compress_size + (1 << 20):
                    raise ModelError(f"{path}: archive member {info.filename} unpacks to {info.file_size:,} bytes: "
                                     "the file is damaged")
            if infos["config.json"].file_size > MAX_JSON_BYTES:
                raise ModelError(f"{path}: config.json of {infos['config.json'].file_size:,} bytes: the file is damaged")
            config = _json(path, z.read("config.json"), "config.json")
            if "metadata.json" in infos:
                _json(path, z.read("metadata.json"), "metadata.json")
            weights = z.read("model.weights.h5") if "model.weights.h5" in infos else None
        if weights is not None:
            _isolated(path, _read_h5, path, io.BytesIO(weights), _h5_limit(len(weights)))
    except ModelError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, KeyError,
            NotImplementedError, RuntimeError, TypeError) as e:
        raise ModelError(f"{path}: a damaged .keras archive ({_first_line(e)})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path}: config.json holds {type(config).__name__}, not a model config: the file is damaged")
    _scan_config(contents, config)


def _scan_h5(path: Path, contents: Contents) -> str:
    """Scan an HDF5 model; returns its format (keras3-h5 or keras2-h5)."""
    attrs = _isolated(path, _read_h5, path, str(path), _h5_limit(path.stat().st_size))
    if "model_config" not in attrs:
        raise ModelError(f"{path}: an HDF5 file with weights only (no model_config): save the whole model "
                         "with model.save(...), not model.save_weights(...)")
    if not isinstance(attrs["model_config"], str) or len(attrs["model_config"]) > MAX_JSON_BYTES:
        raise ModelError(f"{path}: its model_config is not a JSON text: the file is damaged")
    config = _json(path, attrs["model_config"], "model_config")
    if not isinstance(config, dict):
        raise ModelError(f"{path}: its model_config holds {type(config).__name__}, not a model: the file is damaged")
    _scan_config(contents, config)
    training = attrs.get("training_config")
    if isinstance(training, str) and len(training) <= MAX_JSON_BYTES:
        _scan_config(contents, _json(path, training, "training_config"), top_is_layer=False)
    return "keras3-h5" if str(attrs.get("keras_version", "")).startswith("3") else "keras2-h5"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:160] if text else type(e).__name__)


# --- SavedModel folders ------------------------------------------------------------------------------

def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _fields(buf: bytes):
    """(field number, bytes) of the length-delimited fields of a protobuf message; others skipped."""
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, i = _varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated field")
            yield number, buf[i:i + n]
            i += n
        else:
            raise ValueError(f"wire type {wire}")


def _scan_keras_metadata(path: Path, contents: Contents) -> None:
    """keras_metadata.pb (tf_keras's SavedMetadata: nodes = 1; node_path = 3, metadata = 5, a JSON text),
    decoded by hand so that reading it needs no Keras."""
    raw = (path / "keras_metadata.pb").read_bytes()
    try:
        nodes = [dict(_fields(node)) for number, node in _fields(raw) if number == 1]
        for node in nodes:
            meta = node.get(5, b"").decode()
            if not meta:
                continue
            node_path = node.get(3, b"?").decode(errors="replace")
            info = _json(path, meta, f"keras_metadata.pb node {node_path}")
            if isinstance(info, dict):       # every node is checked; the layers are counted from the root's
                counted = Counter(contents.layers)
                _scan_config(contents, info, top_is_layer=node.get(4) != b"_tf_keras_metric")
                contents.layers = counted
                if node_path == "root":      # its config (model_config repeats it)
                    root = Contents(path, contents.format)
                    _scan_config(root, {"class_name": info.get("class_name"), "config": info.get("config")})
                    contents.layers.update(root.layers)
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: a damaged keras_metadata.pb ({_first_line(e)})") from None


def _called(node) -> list[str]:
    """Names of the functions a NodeDef calls: its op when that is a library function, and its `func` attrs."""
    out = []
    for value in node.attr.values():
        if value.HasField("func"):
            out.append(value.func.name)
        if value.HasField("list"):
            out.extend(f.name for f in value.list.func)
    return out


def _reach(start: list[str], calls: dict[str, list[str]]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        f = todo.pop()
        if f in seen or f not in calls:
            continue
        seen.add(f)
        todo.extend(calls[f])
    return seen


def _scan_meta_graph(path: Path, mg, contents: Contents) -> None:
    from tensorflow.python.framework import op_def_registry
    graph = mg.graph_def
    functions = {f.signature.name: f for f in graph.library.function}
    calls = {name: [c for n in f.node_def for c in ([n.op] if n.op in functions else []) + _called(n)]
             for name, f in functions.items()}
    # The saver: nodes named by saver_def, fed by its filename placeholder; what they call may save/restore.
    saver_nodes: dict[str, str] = {}
    if mg.HasField("saver_def"):
        sd = mg.saver_def
        placeholder = sd.filename_tensor_name.split(":")[0]
        for kind, tensor in (("save", sd.save_tensor_name), ("restore", sd.restore_op_name)):
            saver_nodes[tensor.split(":")[0].lstrip("^")] = kind
        saver_nodes = {name: kind for name, kind in saver_nodes.items()
                       if any(n.name == name and n.input and n.input[0].split(":")[0] == placeholder
                              for n in graph.node)}
    roots = {"save": [], "restore": [], "model": []}
    for n in graph.node:
        targets = ([n.op] if n.op in functions else []) + _called(n)
        roots[saver_nodes.get(n.name, "model")].extend(targets)
    reached = {kind: _reach(r, calls) for kind, r in roots.items()}
    unreached = set(functions) - set().union(*reached.values())

    def allowed_here(op: str, function: str | None) -> bool:
        if function is None or function in reached["model"] or function in unreached:
            return False
        kinds = [k for k in ("save", "restore") if function in reached[k]]
        return len(kinds) == 1 and op in SAVER_OPS[kinds[0]]

    def check(op: str, where: str, function: str | None) -> None:
        contents.ops[op] += 1
        if op in functions:
            return
        if op_def_registry.get(op) is None:
            raise ModelError(f"{path}: op {op} ({where}) is not an op of this TensorFlow: the SavedModel is "
                             "damaged or needs a custom op library")
        why = denied(op)
        if why and not allowed_here(op, function):
            what = f"op {op} in {where}"
            if what not in contents.carried:
                contents.refused.append(Refusal(what, f"{why}: running the model would do that on this machine"))

    for n in graph.node:
        check(n.op, f"graph node '{n.name}'", None)
    for name, f in functions.items():
        for n in f.node_def:
            check(n.op, f"function {name}", name)


def _scan_savedmodel(path: Path, contents: Contents) -> None:
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2
    if (path / "keras_metadata.pb").is_file():
        _scan_keras_metadata(path, contents)
    sm = saved_model_pb2.SavedModel()
    try:
        sm.ParseFromString((path / "saved_model.pb").read_bytes())
    except (DecodeError, RuntimeWarning, ValueError) as e:
        raise ModelError(f"{path}: a damaged saved_model.pb ({_first_line(e)})") from None
    if not sm.meta_graphs:
        raise ModelError(f"{path}: saved_model.pb holds no graph: the SavedModel is damaged")
    for mg in sm.meta_graphs:
        _scan_meta_graph(path, mg, contents)


# --- the stage ----------------------------------------------------------------------------------------

def scan(path: str | Path) -> Contents:
    """Read what the model file holds without running any of it; a damaged file is a ModelError, code it
    carries is listed in `refused` (the caller decides: `admit`)."""
    p = Path(path)
    expected = "expected a Keras 3 .keras archive, an HDF5 .h5 or a SavedModel folder"
    if not p.exists():
        raise ModelError(f"{p}: no such file or folder")
    if p.is_dir():
        if not (p / "saved_model.pb").is_file():
            raise ModelError(f"{p}: a folder without saved_model.pb, not a SavedModel; {expected}")
        fmt = "keras2-savedmodel" if (p / "keras_metadata.pb").is_file() else "savedmodel"
        contents = Contents(p, fmt)
        _scan_savedmodel(p, contents)
        return contents
    with p.open("rb") as f:
        head = f.read(8)
    if head.startswith(b"PK"):
        contents = Contents(p, "keras3")
        _scan_keras3(p, contents)
        return contents
    if head == HDF5_SIGNATURE:
        contents = Contents(p, "keras2-h5")
        contents.format = _scan_h5(p, contents)
        return contents
    raise ModelError(f"{p}: not a Keras model file; {expected}")


def admit(cfg, trust: bool | None = None):
    """Scan `cfg.keras_model.path`; refuse what would run here unless trusted (`trust`, else what `cfg.origin`
    recorded). Returns `cfg` with origin {"trusted": True, "carried": [...]} when trusted."""
    contents = scan(cfg.keras_model.path)
    if trust is None:
        trust = isinstance(cfg.origin, dict) and cfg.origin.get("trusted") is True
    if contents.refused and not trust:
        raise contents.error()
    if not trust:
        return cfg
    return dataclasses.replace(cfg, origin={"trusted": True, "carried": contents.carried})


def trusted(cfg) -> dict:
    """The trust record `admit` put in the origin ({} when the file was not trusted), for the manifest."""
    if isinstance(cfg.origin, dict) and cfg.origin.get("trusted") is True:
        return {"trusted": True, "carried": list(cfg.origin.get("carried", []))}
    return {}


def as_is_note(cfg) -> str:
    """What exporting a model unchanged runs besides its layers, for the messages that offer --no-prune."""
    carried = trusted(cfg).get("carried")
    return f" — including the code it carries, which runs on this machine ({', '.join(carried)})" if carried else ""
