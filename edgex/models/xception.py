"""Xception (Chollet 2017) as a function of a small frozen config, and its regular-convolution twin.

With the ``paper`` preset the graph is layer for layer the one of ``keras.applications.Xception``:
entry flow, ``middle_blocks`` middle-flow blocks, exit flow, 1x1 strided residual shortcuts, batch
normalization after every convolution and no activation between depthwise and pointwise convolutions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from devices.errors import EdgexError

CONV_KINDS = ("separable", "regular")
INTERMEDIATE_ACTIVATIONS = ("none", "relu", "elu")
MIN_INPUT_SIZE = 32  # the smallest input for which every stride-2 stage still has a pixel left


@dataclass(frozen=True)
class XceptionConfig:
    classes: int = 1000  # size of the softmax classifier
    input_size: int = 299  # side of the square RGB input
    width: float = 1.0  # multiplier on every layer's channels (rounded to a multiple of 8)
    middle_blocks: int = 8  # repeats of the 19x19x728 middle-flow block
    conv: str = "separable"  # "regular": every SeparableConv2D becomes a Conv2D with the same kernel and filters
    intermediate_activation: str = "none"  # paper's ablation: activation between depthwise and pointwise
    residual: bool = True  # paper's other ablation: residual shortcuts on or off
    dropout: float = 0.0  # dropout before the classifier (the paper's ImageNet recipe uses 0.5)
    include_top: bool = True  # global average pooling + classifier
    bn_momentum: float = 0.99  # Keras' default; small presets use 0.9 so that a few hundred steps settle the statistics

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.classes, int) or self.classes < 2:
            raise EdgexError(f"classes must be an integer >= 2, got {self.classes!r}")
        if not isinstance(self.input_size, int) or self.input_size < MIN_INPUT_SIZE:
            raise EdgexError(f"input size must be an integer >= {MIN_INPUT_SIZE}, got {self.input_size!r}")
        if not (0 < float(self.width) <= 4):
            raise EdgexError(f"width must be in (0, 4], got {self.width!r}")
        if not isinstance(self.middle_blocks, int) or not 0 <= self.middle_blocks <= 32:
            raise EdgexError(f"middle blocks must be an integer in [0, 32], got {self.middle_blocks!r}")
        if self.conv not in CONV_KINDS:
            raise EdgexError(f"unknown conv {self.conv!r}; choose one of: {', '.join(CONV_KINDS)}")
        if self.intermediate_activation not in INTERMEDIATE_ACTIVATIONS:
            raise EdgexError(
                f"unknown intermediate activation {self.intermediate_activation!r}; "
                f"choose one of: {', '.join(INTERMEDIATE_ACTIVATIONS)}"
            )
        if self.conv == "regular" and self.intermediate_activation != "none":
            raise EdgexError("intermediate activation applies to separable convolutions only (conv='separable')")
        if not 0 < float(self.bn_momentum) < 1:
            raise EdgexError(f"batch norm momentum must be in (0, 1), got {self.bn_momentum!r}")
        if not 0 <= float(self.dropout) < 1:
            raise EdgexError(f"dropout must be in [0, 1), got {self.dropout!r}")

    def channels(self, filters: int) -> int:
        """Channels of a layer that has ``filters`` at width 1.0: scaled, rounded to a multiple of 8, at least 8."""
        return max(8, int(filters * self.width + 4) // 8 * 8)

    def replace(self, **changes) -> XceptionConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


def build_xception(config: XceptionConfig, name: str | None = None):
    """Build an uncompiled Keras (tf_keras) model from ``config``."""
    from devices.tfkeras import keras

    keras = keras()
    layers = keras.layers
    c = config.channels
    # Under a mixed precision policy the classifier stays float32 so that softmax is computed in full precision.
    mixed = keras.mixed_precision.global_policy().compute_dtype != "float32"

    def sep_conv(x, filters, name):
        if config.conv == "regular":
            return layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
        if config.intermediate_activation == "none":
            return layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_depthwise")(x)
        x = layers.Activation(config.intermediate_activation, name=f"{name}_intermediate_act")(x)
        return layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pointwise")(x)

    def bn(x, name):
        return layers.BatchNormalization(momentum=config.bn_momentum, name=name)(x)

    def shortcut(x, filters, block):
        if not config.residual:
            return None
        s = layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False, name=f"{block}_shortcut")(x)
        return bn(s, f"{block}_shortcut_bn")

    def merge(x, residual, block):
        return x if residual is None else layers.add([x, residual], name=f"{block}_add")

    inputs = keras.Input(shape=(config.input_size, config.input_size, 3), name="input")

    # Entry flow.
    x = layers.Conv2D(c(32), 3, strides=2, use_bias=False, name="block1_conv1")(inputs)
    x = bn(x, "block1_conv1_bn")
    x = layers.Activation("relu", name="block1_conv1_act")(x)
    x = layers.Conv2D(c(64), 3, use_bias=False, name="block1_conv2")(x)
    x = bn(x, "block1_conv2_bn")
    x = layers.Activation("relu", name="block1_conv2_act")(x)

    for number, filters in ((2, 128), (3, 256), (4, 728)):
        block = f"block{number}"
        residual = shortcut(x, c(filters), block)
        if number != 2:  # block 2 follows conv2's ReLU directly
            x = layers.Activation("relu", name=f"{block}_sepconv1_act")(x)
        x = sep_conv(x, c(filters), f"{block}_sepconv1")
        x = bn(x, f"{block}_sepconv1_bn")
        x = layers.Activation("relu", name=f"{block}_sepconv2_act")(x)
        x = sep_conv(x, c(filters), f"{block}_sepconv2")
        x = bn(x, f"{block}_sepconv2_bn")
        x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{block}_pool")(x)
        x = merge(x, residual, block)

    # Middle flow.
    for i in range(config.middle_blocks):
        block = f"block{i + 5}"
        residual = x if config.residual else None
        for j in (1, 2, 3):
            x = layers.Activation("relu", name=f"{block}_sepconv{j}_act")(x)
            x = sep_conv(x, c(728), f"{block}_sepconv{j}")
            x = bn(x, f"{block}_sepconv{j}_bn")
        x = merge(x, residual, block)

    # Exit flow.
    block = f"block{config.middle_blocks + 5}"
    residual = shortcut(x, c(1024), block)
    x = layers.Activation("relu", name=f"{block}_sepconv1_act")(x)
    x = sep_conv(x, c(728), f"{block}_sepconv1")
    x = bn(x, f"{block}_sepconv1_bn")
    x = layers.Activation("relu", name=f"{block}_sepconv2_act")(x)
    x = sep_conv(x, c(1024), f"{block}_sepconv2")
    x = bn(x, f"{block}_sepconv2_bn")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{block}_pool")(x)
    x = merge(x, residual, block)

    block = f"block{config.middle_blocks + 6}"
    for j, filters in ((1, 1536), (2, 2048)):
        x = sep_conv(x, c(filters), f"{block}_sepconv{j}")
        x = bn(x, f"{block}_sepconv{j}_bn")
        x = layers.Activation("relu", name=f"{block}_sepconv{j}_act")(x)

    if config.include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if config.dropout:
            x = layers.Dropout(config.dropout, name="dropout")(x)
        x = layers.Dense(config.classes, activation="softmax", name="predictions", dtype="float32" if mixed else None)(
            x
        )
    return keras.Model(inputs, x, name=name or ("xception" if config.conv == "separable" else "xception_regular"))
