"""`export --keras-model PATH`: the user's own Fashion-MNIST model in place of the one the pipeline trains.

The stage, in the order it runs: read the file (a Keras 3 .keras archive, HDF5 from either Keras, or a
SavedModel folder); check that it takes one 28×28 image and gives 10 classes; find what it expects of its
pixels; measure its float accuracy on the test images (near chance means the normalization is wrong); rebuild
it as a flat tf_keras model with the device's (N, 28, 28, 1) input and probabilities out (rebuild.py);
and prove the rebuilt model equal to the original on the test images before anything else happens. From
there the chain treats it like its own model.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf
import tf_keras

from pipeline.config import MEAN, STD, Config
from pipeline.errors import ModelError
from pipeline.keras_import import rebuild, scan
from pipeline.release import provenance
from pipeline.train.cache import build_path, stage_key
from pipeline.train.fit import cache_key as train_cache_key
from pipeline.train.fit import standardize

FORMATS = {      # format → what it is (the Keras that wrote it is said beside it, from the file)
    "keras3": "Keras 3 .keras archive",
    "keras3-h5": "HDF5 file (Keras 3's legacy format)",
    "keras2-h5": "HDF5 file",
    "keras2-savedmodel": "SavedModel folder with Keras metadata",
    "savedmodel": "SavedModel folder without Keras metadata",
}
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# What the model's pixels could be besides what was assumed: tried when the accuracy is near chance, so the
# error can name the flag that works. (mean, std) of input = (pixel/255 - mean) / std.
NORMALIZATIONS = {
    "--normalization 0,1 (pixel / 255)": (0.0, 1.0),
    "--input-scale 1 (raw pixels 0..255)": (0.0, 1.0 / 255.0),
    f"--normalization {MEAN},{STD} (standardized)": (MEAN, STD),
    "--normalization 0.5,0.5 (-1..1)": (0.5, 0.5),
}
BATCH = 1024


@dataclass
class Source:
    """What the file is, before anything is loaded."""

    path: Path
    format: str
    sha256: str
    saved_by: str
    config: dict | None        # the serialized model (class_name + config), when the file carries one


@dataclass
class Imported:
    """The import stage's result: the device-form model and the config the rest of the chain runs with."""

    model: tf_keras.Model      # (N, 28, 28, 1) standardized → (N, 10) probabilities
    cfg: Config                # data.mean / data.std and origin set from the model
    info: dict                 # manifest["import"]
    key: str                   # stands in for train.cache_key in the stage cache


# --- reading the file ---------------------------------------------------------------------------------

def _digest(path: Path) -> str:
    """The file's SHA-256 (provenance.sha256); of a SavedModel folder, one SHA-256 over its files' relative
    names and bytes in sorted order."""
    if not path.is_dir():
        return provenance.sha256(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(path)).encode() + b"\0")
        digest.update(f.read_bytes())
    return digest.hexdigest()


def _savedmodel_versions(path: Path) -> tuple[str, dict | None]:
    """('Keras x' or 'TensorFlow x', the model's config when tf_keras saved it)."""
    if (path / "keras_metadata.pb").is_file():
        from tf_keras.protobuf import saved_metadata_pb2
        meta = saved_metadata_pb2.SavedMetadata()
        meta.ParseFromString((path / "keras_metadata.pb").read_bytes())
        for node in meta.nodes:
            if node.node_path == "root":
                info = json.loads(node.metadata)
                return f"Keras {info.get('keras_version', 'unknown')}", {"class_name": info.get("class_name"),
                                                                           "config": info.get("config") or {}}
        return "Keras (version unknown)", None
    from tensorflow.core.protobuf import saved_model_pb2
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((path / "saved_model.pb").read_bytes())
    version = sm.meta_graphs[0].meta_info_def.tensorflow_version if sm.meta_graphs else ""
    return f"TensorFlow {version or 'unknown'}", None


def read_source(path: str | Path) -> Source:
    """Identify the file and read its config and the Keras version that saved it; a file that is none of
    the three formats is one error naming it."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such file or folder")
    expected = "expected a Keras 3 .keras archive, an HDF5 .h5 or a SavedModel folder"
    if p.is_dir():
        if not (p / "saved_model.pb").is_file():
            raise ModelError(f"{p}: a folder without saved_model.pb, not a SavedModel; {expected}")
        saved_by, config = _savedmodel_versions(p)
        fmt = "keras2-savedmodel" if (p / "keras_metadata.pb").is_file() else "savedmodel"
        return Source(p, fmt, _digest(p), saved_by, config)
    with p.open("rb") as f:
        head = f.read(8)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(p) as z:
                names = set(z.namelist())
                if "config.json" not in names:
                    raise ModelError(f"{p}: a zip archive without config.json, not a Keras 3 .keras file")
                config = json.loads(z.read("config.json"))
                meta = json.loads(z.read("metadata.json")) if "metadata.json" in names else {}
        except (zipfile.BadZipFile, json.JSONDecodeError, EOFError) as e:
            raise ModelError(f"{p}: a damaged .keras archive ({e})") from e
        return Source(p, "keras3", _digest(p), f"Keras {meta.get('keras_version', 'unknown')}", config)
    if head == HDF5_SIGNATURE:
        import h5py
        try:
            with h5py.File(p, "r") as h:
                attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h.attrs.items()}
        except OSError as e:
            raise ModelError(f"{p}: a damaged HDF5 file ({e})") from e
        if "model_config" not in attrs:
            raise ModelError(f"{p}: an HDF5 file with weights only (no model_config): save the whole model "
                             "with model.save(...), not model.save_weights(...)")
        version = str(attrs.get("keras_version", "unknown"))
        fmt = "keras3-h5" if version.startswith("3") else "keras2-h5"
        return Source(p, fmt, _digest(p), f"Keras {version}", json.loads(attrs["model_config"]))
    raise ModelError(f"{p}: not a Keras model file; {expected}")


def load(source: Source, trusted: bool = False):
    """The model as its own Keras loads it: (model, keras3); a SavedModel without Keras metadata is
    (the loaded module, None). Keras 3's safe mode (which refuses a Lambda's bytecode) is left on unless the
    user trusted the file (`--trust-model`): the scan has refused such a file before this otherwise."""
    try:
        if source.format in ("keras3", "keras3-h5"):
            import keras           # Keras 3, beside tf_keras in the same process
            return keras.saving.load_model(source.path, compile=False, safe_mode=not trusted), True
        if source.format in ("keras2-h5", "keras2-savedmodel"):
            return tf_keras.models.load_model(source.path, compile=False), False
        return tf.saved_model.load(str(source.path)), None
    except (ValueError, TypeError, OSError, KeyError, AttributeError, ImportError, MemoryError,
            tf.errors.OpError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{source.path}: {FORMATS[source.format]} that its Keras cannot load: {first}") from e


def _signature(module):
    if "serving_default" not in getattr(module, "signatures", {}):
        raise ModelError("the SavedModel has no serving_default signature to call")
    fn = module.signatures["serving_default"]
    inputs = fn.structured_input_signature[1]
    if len(inputs) != 1 or len(fn.structured_outputs) != 1:
        raise ModelError(f"the SavedModel's serving_default takes {len(inputs)} inputs and gives "
                         f"{len(fn.structured_outputs)} outputs; one image in and one output of 10 are expected")
    return fn, next(iter(inputs)), next(iter(fn.structured_outputs))


def io_shapes(obj, keras3: bool | None) -> tuple[tuple, tuple]:
    """(input shape, output shape) without the batch axis; more than one input or output is an error."""
    if keras3 is None:
        fn, name, out = _signature(obj)
        return tuple(fn.structured_input_signature[1][name].shape[1:]), tuple(fn.structured_outputs[out].shape[1:])
    ins, outs = obj.input_shape, obj.output_shape
    if isinstance(ins, list) and len(ins) != 1:
        raise ModelError(f"the model has {len(ins)} inputs; one 28×28 image input is expected")
    if isinstance(outs, list) and len(outs) != 1:
        raise ModelError(f"the model has {len(outs)} outputs; one output of 10 class scores is expected")
    ins, outs = (ins[0] if isinstance(ins, list) else ins), (outs[0] if isinstance(outs, list) else outs)
    return tuple(ins[1:]), tuple(outs[1:])


def predictor(obj, keras3: bool | None, input_shape: tuple) -> Callable[[np.ndarray], np.ndarray]:
    """The original model as a function of standardized (N, 28, 28, 1) images, fed in its own input shape."""
    if keras3 is None:
        fn, name, out = _signature(obj)
        return lambda x: np.concatenate([fn(**{name: tf.constant(x[i:i + BATCH].reshape((-1, *input_shape)))})[out]
                                         .numpy() for i in range(0, len(x), BATCH)])
    return lambda x: np.asarray(obj.predict(x.reshape((-1, *input_shape)), batch_size=BATCH, verbose=0))


# --- what the model expects ------------------------------------------------------------------------

def _leading_layers(model):
    """The model's layers from its input on, nested models entered, shape-only layers skipped."""
    for layer in model.layers:
        name = type(layer).__name__
        if name in rebuild.CONTAINERS:
            yield from _leading_layers(layer)
        elif name not in ("InputLayer", "Reshape", "Permute", *rebuild.INFERENCE_IDENTITY):
            yield layer


def normalization(cfg: Config, obj, keras3: bool | None) -> tuple[float, float, str]:
    """(mean, std, how it was decided) with model input = (pixel/255 - mean) / std."""
    k = cfg.keras_model
    inside = None
    if keras3 is not None:
        first = next(_leading_layers(obj), None)
        kind = type(first).__name__ if first is not None else None
        if kind == "Rescaling":
            c = first.get_config()
            inside = (f"raw pixels 0..255: the model's own Rescaling layer '{first.name}' (scale {c['scale']:.6g}, "
                      f"offset {c['offset']:.6g})", True)
        elif kind == "Normalization":
            c, w = first.get_config(), first.get_weights()
            mean = np.asarray(c["mean"] if c.get("mean") is not None else w[0], np.float64)
            raw = float(np.max(np.abs(mean))) > 1.5      # adapted on 0..255 pixels, not on pixel / 255
            inside = (f"{'raw pixels 0..255' if raw else 'pixel / 255'}: the model's own Normalization layer "
                      f"'{first.name}' (mean {float(np.mean(mean)):.4g})", raw)
    if k.normalization is not None:
        m, s = k.normalization
        note = f"; the model's own layer is ignored ({inside[0]})" if inside else ""
        return float(m), float(s), f"--normalization {m:g},{s:g}: (pixel/255 - {m:g}) / {s:g}{note}"
    if k.input_scale is not None:
        note = f"; the model's own layer is ignored ({inside[0]})" if inside else ""
        return 0.0, 1.0 / (255.0 * k.input_scale), f"--input-scale {k.input_scale:g}: pixel × {k.input_scale:g}{note}"
    if inside is not None:
        return (0.0, 1.0 / 255.0, inside[0]) if inside[1] else (0.0, 1.0, inside[0])
    return 0.0, 1.0, "pixel / 255 (the default; --input-scale or --normalization when the model expects otherwise)"


def describe(mean: float, std: float) -> str:
    """The normalization in words: 'pixel / 255', 'raw pixels 0..255' or '(pixel/255 - m) / s'."""
    if mean == 0 and np.isclose(std, 1.0):
        return "pixel / 255"
    if mean == 0 and np.isclose(std, 1 / 255):
        return "raw pixels 0..255"
    return f"(pixel/255 - {mean:g}) / {std:g}"


def output_kind(outputs: np.ndarray) -> str:
    """'probabilities' when every row is a distribution (non-negative, sums to 1), else 'logits'."""
    sums = outputs.sum(axis=1)
    return "probabilities" if outputs.min() >= -1e-6 and float(np.abs(sums - 1.0).max()) < 1e-3 else "logits"


def last_activation(obj, keras3: bool | None) -> str:
    """What the model's config says its last layer does, for the log and the manifest."""
    if keras3 is None:
        return "unknown (no layers in the SavedModel)"
    layer = obj.layers[-1]
    while type(layer).__name__ in rebuild.CONTAINERS:
        layer = layer.layers[-1]
    c = layer.get_config()
    what = c.get("activation", "softmax" if type(layer).__name__ == "Softmax" else None)
    return f"'{layer.name}' ({type(layer).__name__}{'' if what is None else f', activation {what}'})"


def _accuracy(outputs: np.ndarray, y: np.ndarray) -> float:
    return float((outputs.argmax(1) == y).mean())


def check_accuracy(cfg: Config, run: Callable, x_uint8: np.ndarray, y: np.ndarray, mean: float, std: float,
                   how: str, name: str) -> tuple[np.ndarray, float]:
    """(outputs, accuracy) of the original with the chosen normalization; near chance is an error that
    names the normalization which does work, when one of the usual ones does."""
    outputs = run(standardize(x_uint8, mean, std))
    acc = _accuracy(outputs, y)
    if acc >= cfg.keras_model.min_accuracy:
        return outputs, acc
    tried = {flag: _accuracy(run(standardize(x_uint8, m, s)), y) for flag, (m, s) in NORMALIZATIONS.items()
             if not (np.isclose(m, mean) and np.isclose(s, std))}
    best = max(tried, key=tried.get)
    others = ", ".join(f"{flag.split(' (')[0]}: {a:.1%}" for flag, a in tried.items())
    hint = (f"; with {best} it gets {tried[best]:.1%}" if tried[best] >= cfg.keras_model.min_accuracy else
            f"; none of the usual ones does better ({others})")
    raise ModelError(f"{name}: {acc:.1%} of {len(y):,} test images right with input {describe(mean, std)} "
                     f"(chance is 10 %, --min-accuracy {cfg.keras_model.min_accuracy:g}): check the normalization{hint}")


# --- the device form --------------------------------------------------------------------------------

class SavedModelCall(tf_keras.layers.Layer):
    """A SavedModel's serving function as a tf_keras layer: a model that cannot be rebuilt, exported as it is."""

    def __init__(self, module, **kwargs):
        super().__init__(**kwargs)
        self.module = module
        self._fn, self._input, self._output = _signature(module)

    def call(self, x):
        return self._fn(**{self._input: x})[self._output]


def as_is(obj, keras3: bool | None, input_shape: tuple, softmax: bool, folder: Path) -> tuple[tf_keras.Model, tf_keras.Model]:
    """(device model, core) around the original unchanged: a tf_keras model is called as a nested model,
    anything else through its SavedModel (a Keras 3 model is exported to one under `folder` first)."""
    inp = tf_keras.Input((28, 28, 1), name="input")
    reshape = rebuild.device_input(input_shape)
    x = inp if reshape is None else tf_keras.layers.Reshape(reshape, name="to_model_input")(inp)
    if keras3 is False:
        out = obj(x)
    else:
        if keras3:
            folder.mkdir(parents=True, exist_ok=True)
            obj.export(str(folder / "savedmodel"), verbose=False)
            obj = tf.saved_model.load(str(folder / "savedmodel"))
        out = SavedModelCall(obj, name="saved_model")(x)
    core = tf_keras.Model(inp, out, name="imported_core")
    if not softmax:
        return core, core
    return tf_keras.Model(inp, tf_keras.layers.Softmax(name="probabilities")(out), name="imported"), core


def prove_equal(core: tf_keras.Model, original: np.ndarray, x: np.ndarray, tolerance: float) -> dict:
    """The rebuilt model's outputs beside the original's on the same images: largest absolute difference
    (allowed: `tolerance` × the outputs' scale, at least 1) and whether every top-1 answer is the same."""
    rebuilt = core.predict(x, batch_size=BATCH, verbose=0)
    diff = float(np.abs(rebuilt - original).max())
    scale = max(1.0, float(np.abs(original).max()))
    same_top1 = int((rebuilt.argmax(1) == original.argmax(1)).sum())
    return {"images": int(len(x)), "max_abs_diff": diff, "output_scale": round(scale, 4),
            "top1_identical": same_top1 == len(x), "top1_same": same_top1,
            "equal": bool(diff <= tolerance * scale and same_top1 == len(x))}


def key(cfg: Config, file_digest: str) -> str:
    """The stage-cache key of an imported model: the file (its digest), how it is read, and the fine-tune settings."""
    return stage_key("keras-model", file_digest, train_cache_key(cfg))


def import_model(cfg: Config, splits, log: Callable[[str, str], None]) -> Imported:
    """The import stage (module docstring): the user's model, checked, proven and in device form."""
    cfg = scan.admit(cfg)                 # what the file would run here: refused unless trusted (issue #29)
    src = read_source(cfg.keras_model.path)
    name = src.path.name
    log("import", f"{name}: {FORMATS[src.format]}, saved by {src.saved_by}, sha256 {src.sha256[:12]}…")
    problems = rebuild.unsupported(src.config) if src.config else []
    custom = [p for p in problems if "custom layer" in p]
    if custom:
        raise ModelError(f"{name}: layer {', '.join(custom)} cannot be rebuilt: its code is not in the file; "
                         "only built-in Keras layers can be imported")
    if problems and cfg.prune.enabled:
        raise ModelError(f"{name}: layer {', '.join(problems)} cannot be rebuilt in tf_keras, which pruning needs; "
                         "--no-prune exports the model unpruned, computed by the Keras that saved it"
                         + scan.as_is_note(cfg))
    if src.format == "savedmodel" and cfg.prune.enabled:
        raise ModelError(f"{name}: a SavedModel without Keras metadata (Keras 3 model.export, tf.saved_model.save) "
                         "has no layers to rebuild or prune; --no-prune exports it as it is (its graph, run by "
                         f"TensorFlow{scan.as_is_note(cfg)}), or save the model with model.save('model.keras')")
    obj, keras3 = load(src, trusted=bool(scan.trusted(cfg)))
    in_shape, out_shape = io_shapes(obj, keras3)
    try:
        rebuild.device_input(in_shape)
    except ModelError as e:
        raise ModelError(f"{name}: {e}") from None
    if out_shape != (10,):
        raise ModelError(f"{name}: the model gives output of shape (N, {', '.join(map(str, out_shape))}); "
                         "expected (N, 10): one score per Fashion-MNIST class")
    mean, std, how = normalization(cfg, obj, keras3)
    log("import", f"input {tuple(in_shape)}, normalization: {how}")
    run_original = predictor(obj, keras3, in_shape)
    original, acc = check_accuracy(cfg, run_original, splits.x_test, splits.y_test, mean, std, how, name)
    kind = output_kind(original)
    log("import", f"float accuracy of the file as it is: {acc:.2%} on {len(splits.y_test):,} test images; outputs "
                  f"{kind} (last layer {last_activation(obj, keras3)})"
                  + ("; a Softmax is appended so every artifact gives probabilities" if kind == "logits" else ""))
    cfg = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, mean=float(mean), std=float(std)),
        origin={"kind": "keras-model", "file": name, "sha256": src.sha256, "saved_by": src.saved_by,
                "format": src.format, **scan.trusted(cfg)})
    stage = key(cfg, src.sha256)
    x = standardize(splits.x_test, mean, std)
    rebuilt = not problems and src.format != "savedmodel"
    if rebuilt:
        graph = rebuild.graph_of(obj, bool(keras3))
        model, core = rebuild.build(graph, softmax=kind == "logits", name="imported")
    else:
        graph = None
        model, core = as_is(obj, keras3, in_shape, kind == "logits", build_path(cfg, "import", stage))
    proof = prove_equal(core, original, x, cfg.keras_model.max_abs_diff)
    what = (f"rebuilt in tf_keras ({len(graph.nodes)} layers" + (f"; left out, the identity at inference: "
            f"{', '.join(graph.dropped)}" if graph.dropped else "") + ")") if rebuilt else "wrapped as it is (not rebuilt)"
    if not proof["equal"]:
        raise ModelError(f"{name}: the model {what} differs from the original on the test images: largest output "
                         f"difference {proof['max_abs_diff']:.3g} (allowed {cfg.keras_model.max_abs_diff:g} × "
                         f"{proof['output_scale']:g}), {proof['top1_same']:,} of {proof['images']:,} top-1 answers "
                         "the same; --no-prune exports the model unpruned, computed by the Keras that saved it"
                         + scan.as_is_note(cfg))
    log("import", f"{what}; proven equal on {proof['images']:,} test images: largest output difference "
                  f"{proof['max_abs_diff']:.2e}, top-1 identical")
    info = {"file": name, "format": src.format, "format_description": FORMATS[src.format],
            "sha256": src.sha256, "saved_by": src.saved_by, "bytes": _size(src.path),
            "input_shape": list(in_shape), "outputs": kind, "last_layer": last_activation(obj, keras3),
            "softmax_appended": kind == "logits",
            "normalization": {"mean": float(mean), "std": float(std), "how": how},
            "float_accuracy": round(acc, 4), "test_images": int(len(splits.y_test)),
            "rebuilt": rebuilt, "dropped_layers": graph.dropped if graph else [], "proof": proof}
    return Imported(model, cfg, info, stage)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
