"""The model zoo: the tutorial seeds (mlp, baseline) and the edge models (compact, tiny).

All take standardized 28x28x1 float input and end in softmax, so exported artifacts output
probabilities. Built with tf_keras (Keras 2), which tfmot and the converters need.
"""
from __future__ import annotations

import tf_keras as keras
from tf_keras import layers

INPUT_SHAPE = (28, 28, 1)


def _l2(weight_decay: float):
    # SGD weight decay wd equals an L2 penalty of wd/2 * ||w||^2 (same gradient).
    return keras.regularizers.l2(weight_decay / 2) if weight_decay else None


def mlp(weight_decay: float = 0.0) -> keras.Model:
    """Seed S0: Flatten - Dense128 - Dense10."""
    return keras.Sequential([
        keras.Input(INPUT_SHAPE, name="input"),
        layers.Flatten(),
        layers.Dense(128, activation="relu", kernel_regularizer=_l2(weight_decay)),
        layers.Dense(10, activation="softmax", kernel_regularizer=_l2(weight_decay)),
    ], name="mlp")


def baseline(weight_decay: float = 0.0) -> keras.Model:
    """Seed S4: Conv32 3x3 - MaxPool - Flatten - Dense100 - Dense10."""
    return keras.Sequential([
        keras.Input(INPUT_SHAPE, name="input"),
        layers.Conv2D(32, 3, activation="relu", kernel_regularizer=_l2(weight_decay)),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(100, activation="relu", kernel_regularizer=_l2(weight_decay)),
        layers.Dense(10, activation="softmax", kernel_regularizer=_l2(weight_decay)),
    ], name="baseline")


def _conv_bn_relu(x, filters: int, weight_decay: float, separable: bool = False, kernel: int = 3):
    if separable:
        x = layers.DepthwiseConv2D(kernel, padding="same", use_bias=False,
                                   depthwise_regularizer=_l2(weight_decay))(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(filters, 1, use_bias=False, kernel_regularizer=_l2(weight_decay))(x)
    else:
        x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, kernel_regularizer=_l2(weight_decay))(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    return layers.ReLU()(x)


def _stacked(name: str, widths, weight_decay: float, separable_after_first: bool, kernel: int = 3,
             pool: str = "max") -> keras.Model:
    """`widths`: one tuple of filter counts per block; a pooling between blocks, GAP, Dense10."""
    inputs = keras.Input(INPUT_SHAPE, name="input")
    x = inputs
    first = True
    for block, convs in enumerate(widths):
        if block:
            x = (layers.MaxPooling2D() if pool == "max" else layers.AveragePooling2D())(x)
        for filters in convs:
            x = _conv_bn_relu(x, filters, weight_decay, separable=separable_after_first and not first, kernel=kernel)
            first = False
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10, activation="softmax", kernel_regularizer=_l2(weight_decay))(x)
    return keras.Model(inputs, outputs, name=name)


def compact(weight_decay: float = 5e-4) -> keras.Model:
    """The edge model: C16-C16-Pool-C32-C32-Pool-C44-C44-GAP-Dense10, C = conv3x3-BN-ReLU (~47K params)."""
    return _stacked("compact", [(16, 16), (32, 32), (44, 44)], weight_decay, separable_after_first=False)


def tiny(weight_decay: float = 5e-4) -> keras.Model:
    """Depthwise-separable variant of compact, <= 15K params."""
    return _stacked("tiny", [(16, 32), (48, 48), (56, 56)], weight_decay, separable_after_first=True)


def custom(weight_decay: float = 5e-4, arch=None) -> keras.Model:
    """The compact family from an ArchConfig (`--model custom`, `python -m pipeline tune`)."""
    from pipeline.config import ArchConfig
    a = arch or ArchConfig()
    return _stacked("custom", [(w,) * a.convs for w in a.widths], weight_decay, separable_after_first=a.separable,
                    kernel=a.kernel, pool=a.pool)


MODELS = {"mlp": mlp, "baseline": baseline, "compact": compact, "tiny": tiny, "custom": custom}


def build(name: str, weight_decay: float = 0.0, arch=None) -> keras.Model:
    """Model `name`; `arch` (an ArchConfig) only for "custom"."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return custom(weight_decay, arch) if name == "custom" else MODELS[name](weight_decay)


def macs(model: keras.Model) -> int:
    """Multiply-accumulates per image, counted from the layers (conv, depthwise, dense)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.SeparableConv2D):
            h, w, c = layer.output_shape[1:]
            k, m, cin = layer.kernel_size[0] * layer.kernel_size[1], layer.depth_multiplier, layer.input_shape[-1]
            total += h * w * cin * m * (k + c)
        elif isinstance(layer, layers.DepthwiseConv2D):
            h, w, c = layer.output_shape[1:]
            total += h * w * c * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, layers.Conv2D):
            h, w, c = layer.output_shape[1:]
            total += h * w * c * layer.kernel_size[0] * layer.kernel_size[1] * layer.input_shape[-1] // layer.groups
        elif isinstance(layer, layers.Dense):
            total += layer.input_shape[-1] * layer.units
    return total
