"""The scan of a Keras model config (a .keras archive's config.json, an HDF5 file's `model_config`): every layer
and serialized object, nested models included, against the built-in ones of the installed Keras packages (read
from their sources, nothing of theirs run); and the reading of .keras and .h5 files (json, zipfile, h5py in a
child process: TensorFlow is not imported)."""
from __future__ import annotations

import ast
import importlib.util
import io
import os
import pickle
import select
import signal
import time
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path

from pipeline.errors import ModelError
from pipeline.keras_import.contents import (MAX_DEPTH, MAX_DIM, MAX_JSON_BYTES, MAX_MEMBER_BYTES,
    Contents, Refusal, first_line, read_json)

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


def scan_layers(contents: Contents, config, top_is_layer: bool = True) -> None:
    s = _ConfigScan(contents)
    s.walk(config, top_is_layer, None, None)
    s.check_activation_strings(config)


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
                answer = ("error", first_line(e))
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


def scan_keras3(path: Path, contents: Contents) -> None:
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
            config = read_json(path, z.read("config.json"), "config.json")
            if "metadata.json" in infos:
                read_json(path, z.read("metadata.json"), "metadata.json")
            weights = z.read("model.weights.h5") if "model.weights.h5" in infos else None
        if weights is not None:
            _isolated(path, _read_h5, path, io.BytesIO(weights), _h5_limit(len(weights)))
    except ModelError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, KeyError,
            NotImplementedError, RuntimeError, TypeError) as e:
        raise ModelError(f"{path}: a damaged .keras archive ({first_line(e)})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path}: config.json holds {type(config).__name__}, not a model config: the file is damaged")
    scan_layers(contents, config)


def scan_h5(path: Path, contents: Contents) -> str:
    """Scan an HDF5 model; returns its format (keras3-h5 or keras2-h5)."""
    attrs = _isolated(path, _read_h5, path, str(path), _h5_limit(path.stat().st_size))
    if "model_config" not in attrs:
        raise ModelError(f"{path}: an HDF5 file with weights only (no model_config): save the whole model "
                         "with model.save(...), not model.save_weights(...)")
    if not isinstance(attrs["model_config"], str) or len(attrs["model_config"]) > MAX_JSON_BYTES:
        raise ModelError(f"{path}: its model_config is not a JSON text: the file is damaged")
    config = read_json(path, attrs["model_config"], "model_config")
    if not isinstance(config, dict):
        raise ModelError(f"{path}: its model_config holds {type(config).__name__}, not a model: the file is damaged")
    scan_layers(contents, config)
    training = attrs.get("training_config")
    if isinstance(training, str) and len(training) <= MAX_JSON_BYTES:
        scan_layers(contents, read_json(path, training, "training_config"), top_is_layer=False)
    return "keras3-h5" if str(attrs.get("keras_version", "")).startswith("3") else "keras2-h5"
