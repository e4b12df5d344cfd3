"""A user's Keras model as one flat tf_keras graph, which tfmot, the TFLite converter and tf2onnx take.

A Keras 3 model is rebuilt layer by layer from its config (translated to tf_keras's spelling) with its
weights copied; a tf_keras model is rebuilt the same way from its own config. Nested Sequential and
functional models are inlined, augmentation layers that are the identity at inference are left out, and
the device's input (N, 28, 28, 1) is put in front (a Reshape when the model takes 28×28 or 784 values).
Whether the result computes what the original did is proven by the caller (importer.prove_equal).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import tf_keras as keras

from pipeline.errors import ModelError

# Layers rebuilt as the tf_keras layer of the same name: the tutorials' layers and the usual ones.
SUPPORTED = frozenset({
    "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense", "BatchNormalization", "LayerNormalization",
    "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten", "Reshape",
    "Permute", "ZeroPadding2D", "Cropping2D", "Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
    "Rescaling", "Normalization", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
})
# The identity at inference (Keras applies them only while training): left out of the device model.
INFERENCE_IDENTITY = frozenset({"RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
                                "RandomContrast", "RandomBrightness"})
CONTAINERS = frozenset({"Sequential", "Functional", "Model"})
# Keras 3 options tf_keras does not have, and the value at which leaving them out changes nothing.
KERAS3_ONLY = {"quantization_config": None, "lora_rank": None, "lora_alpha": None, "renorm": False,
               "renorm_clipping": None, "optional": False}
RENAMED = {"LeakyReLU": {"negative_slope": "alpha"}}
# Options every tf_keras layer takes besides its own.
BASE_KWARGS = frozenset({"name", "trainable", "dtype", "activity_regularizer", "input_shape", "batch_input_shape",
                         "batch_size", "input_dim", "dynamic", "autocast"})
INPUT = "__input__"


@dataclass
class Node:
    name: str
    class_name: str
    config: dict              # in tf_keras's spelling
    inputs: list[str]         # names of the nodes it reads (INPUT: the model's input)
    listed: bool              # called with a list of tensors (merge layers), not one tensor
    weights: list[np.ndarray]


@dataclass
class Graph:
    """The layers of a model in the order they run, with what each reads."""

    input_shape: tuple        # the original's input shape, without the batch axis
    nodes: list[Node] = field(default_factory=list)
    output: str = INPUT
    dropped: list[str] = field(default_factory=list)   # "name (Class)" of the layers left out


# --- reading a config: the layers, recursively ------------------------------------------------------

def walk(config: dict):
    """(class_name, layer name, registered name or None) of every layer of a serialized model, nested
    models' layers included; works on the raw config of either Keras."""
    for entry in config.get("config", {}).get("layers", []):
        cfg = entry.get("config", {})
        name = cfg.get("name") or entry.get("name") or "?"
        if entry.get("class_name") in CONTAINERS:
            yield from walk(entry)
        else:
            yield entry.get("class_name", "?"), name, entry.get("registered_name"), entry.get("module")


def unsupported(config: dict) -> list[str]:
    """'name (Class)' of each layer this module cannot rebuild, custom ones marked; empty when all can be."""
    out = []
    for cls, name, registered, module in walk(config):
        if cls in ("InputLayer",) or cls in INFERENCE_IDENTITY:
            continue
        custom = (registered not in (None, cls)) or (module is not None and not str(module).startswith("keras"))
        if custom:
            out.append(f"'{name}' ({registered or cls}, a custom layer)")
        elif cls not in SUPPORTED:
            out.append(f"'{name}' ({cls})")
    return out


# --- the two dialects ----------------------------------------------------------------------------------

def _plain(value):
    """A Keras 3 serialized object without the keys tf_keras does not read (module, registered_name, ...)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in ("module", "registered_name", "shared_object_id")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _translate(class_name: str, name: str, config: dict) -> dict:
    """A Keras 3 layer config in tf_keras's spelling; an option tf_keras cannot express is named."""
    cls = getattr(keras.layers, class_name)
    accepted = set(inspect.signature(cls.__init__).parameters) | BASE_KWARGS
    renamed = RENAMED.get(class_name, {})
    out = {}
    for key, value in config.items():
        key = renamed.get(key, key)
        if key == "dtype" or key.endswith("_initializer"):
            continue              # float32, and the weights are copied, not initialized
        if key in KERAS3_ONLY and value == KERAS3_ONLY[key] or key == "renorm_momentum" and not config.get("renorm"):
            continue
        if key not in accepted:
            raise ModelError(f"layer '{name}' ({class_name}): option {key}={value!r} has no tf_keras equivalent")
        if key == "activation" and not isinstance(value, str):
            raise ModelError(f"layer '{name}' ({class_name}): activation {value!r} is not a built-in one")
        if key == "data_format" and value == "channels_first":
            raise ModelError(f"layer '{name}' ({class_name}): channels_first layers are not supported "
                             "(the device model is NHWC)")
        out[key] = _plain(value)
    return out


def _producers(args) -> list[str]:
    """Names of the layers whose outputs a Keras 3 inbound node reads ("__keras_tensor__" entries)."""
    if isinstance(args, dict):
        if args.get("class_name") == "__keras_tensor__":
            return [args["config"]["keras_history"][0]]
        return [p for v in args.values() for p in _producers(v)]
    if isinstance(args, (list, tuple)):
        return [p for v in args for p in _producers(v)]
    return []


def _inbound(entry: dict, keras3: bool) -> tuple[list[str], bool]:
    """(producer names, called with a list) of a functional model's layer entry; one call per layer."""
    nodes = entry.get("inbound_nodes", [])
    name = entry.get("config", {}).get("name") or entry.get("name")
    if len(nodes) != 1:
        raise ModelError(f"layer '{name}' ({entry['class_name']}) is called {len(nodes)} times; "
                         "shared layers are not supported")
    node = nodes[0]
    if keras3:
        args = node.get("args", [])
        listed = len(args) == 1 and isinstance(args[0], list)
        return _producers(args), listed
    # tf_keras: [[producer, node index, tensor index, kwargs], ...]
    return [item[0] for item in node], len(node) > 1 or entry["class_name"] in _MERGE


_MERGE = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"})


def _refs(refs) -> list[str]:
    """Layer names of a functional config's input_layers / output_layers (nested or flat)."""
    if refs and isinstance(refs[0], str):
        return [refs[0]]
    return [r[0] for r in refs]


class _Builder:
    """Collects the nodes of one model, inlining nested models; names stay unique."""

    def __init__(self, keras3: bool):
        self.keras3 = keras3
        self.graph_nodes: list[Node] = []
        self.dropped: list[str] = []
        self.names: set[str] = set()

    def model(self, config: dict, live, inputs: list[str]) -> str:
        """Add the layers of the (Sequential or functional) `config`, fed by `inputs`; return its output node."""
        if "input_layers" in config:
            return self._functional(config, live, inputs)
        current = inputs[0]
        for entry in config["layers"]:
            if entry["class_name"] == "InputLayer":
                continue
            current = self._layer(entry, live, [current], False)
        return current

    def _functional(self, config: dict, live, inputs: list[str]) -> str:
        ins = _refs(config["input_layers"])
        if len(ins) != len(inputs):
            raise ModelError(f"model '{config.get('name')}' has {len(ins)} inputs; one image input is expected")
        produced = dict(zip(ins, inputs))
        for entry in config["layers"]:
            if entry["class_name"] == "InputLayer":
                continue
            names, listed = _inbound(entry, self.keras3)
            produced[entry["config"]["name"]] = self._layer(entry, live, [produced[n] for n in names], listed)
        outs = _refs(config["output_layers"])
        if len(outs) != 1:
            raise ModelError(f"model '{config.get('name')}' has {len(outs)} outputs; one output of 10 is expected")
        return produced[outs[0]]

    def _layer(self, entry: dict, live, inputs: list[str], listed: bool) -> str:
        cls, cfg = entry["class_name"], entry["config"]
        name = cfg["name"]
        layer = live.get_layer(name)
        if cls in CONTAINERS:
            return self.model(cfg, layer, inputs)
        if cls in INFERENCE_IDENTITY:
            self.dropped.append(f"{name} ({cls})")
            return inputs[0]
        if cls not in SUPPORTED or not hasattr(keras.layers, cls):
            raise ModelError(f"layer '{name}' ({cls}) cannot be rebuilt in tf_keras")
        config = _translate(cls, name, cfg) if self.keras3 else dict(cfg)
        for key in ("batch_input_shape", "input_shape", "batch_size"):   # the device input is put in front
            config.pop(key, None)
        unique = name
        while unique in self.names or unique == "input":
            unique = f"{unique}_"
        self.names.add(unique)
        config["name"] = unique
        self.graph_nodes.append(Node(unique, cls, config, inputs, listed, layer.get_weights()))
        return unique


def graph_of(model, keras3: bool) -> Graph:
    """The layer graph of a loaded Keras 3 (`keras3`) or tf_keras Sequential / functional model."""
    b = _Builder(keras3)
    shape = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if shape is None:
        raise ModelError(f"the model has {len(model.input_shape)} inputs; one image input is expected")
    output = b.model(model.get_config(), model, [INPUT])
    return Graph(input_shape=shape, nodes=b.graph_nodes, output=output, dropped=b.dropped)


# --- building the flat tf_keras model ----------------------------------------------------------------

def device_input(shape: tuple) -> tuple | None:
    """The Reshape target that turns the device's (28, 28, 1) into the model's input; None: none needed."""
    if shape == (28, 28, 1):
        return None
    if shape in ((28, 28), (784,)):
        return shape
    raise ModelError(f"the model takes input of shape (N, {', '.join(str(d) for d in shape)}); "
                     "expected one 28×28 grayscale image: (N, 28, 28), (N, 28, 28, 1) or (N, 784)")


def build(graph: Graph, softmax: bool, name: str) -> tuple[keras.Model, keras.Model]:
    """(device model, core): both take (N, 28, 28, 1); the core ends where the original does, the device
    model adds a Softmax when `softmax` (the original gives logits). They share their layers."""
    inp = keras.Input((28, 28, 1), name="input")
    reshape = device_input(graph.input_shape)
    tensors = {INPUT: inp if reshape is None else keras.layers.Reshape(reshape, name="to_model_input")(inp)}
    for node in graph.nodes:
        layer = getattr(keras.layers, node.class_name).from_config(node.config)
        args = [tensors[i] for i in node.inputs]
        tensors[node.name] = layer(args if node.listed else args[0])
        try:
            layer.set_weights(node.weights)
        except ValueError as e:
            raise ModelError(f"layer '{node.name}' ({node.class_name}): its weights do not fit the rebuilt layer "
                             f"({e})") from e
    out = tensors[graph.output]
    core = keras.Model(inp, out, name=f"{name}_core")
    if not softmax:
        return core, core
    return keras.Model(inp, keras.layers.Softmax(name="probabilities")(out), name=name), core
