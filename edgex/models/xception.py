"""Xception (Chollet 2017) as a function of a small frozen config, and its regular-convolution twin.

With the ``paper`` preset the graph is layer for layer the one of ``keras.applications.Xception``:
entry flow, ``middle_blocks`` middle-flow blocks, exit flow, 1x1 strided residual shortcuts, batch
normalization after every convolution and no activation between depthwise and pointwise convolutions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from devices.errors import EdgexError
from edgex.models.segments import check_segments, groups_for, parse_segments

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
    # The spectrum: every separable conv becomes a k x k conv on G channel groups + a 1x1 ("1", "C/4", "C"; None: off)
    segments: str | None = None
    # Output channels of named separable convolutions, where they differ from the width's (channel pruning)
    pointwise_channels: tuple[tuple[str, int], ...] = ()

    def __post_init__(self):
        if self.segments is not None:  # one spelling in files and names: 4 -> "4", "c/4" -> "C/4"
            object.__setattr__(self, "segments", parse_segments(self.segments))
        channels = tuple((str(name), int(count)) for name, count in self.pointwise_channels)  # JSON gives lists
        object.__setattr__(self, "pointwise_channels", channels)
        self.validate()

    @classmethod
    def from_dict(cls, data: dict) -> XceptionConfig:
        """A config recorded by ``to_dict`` (in a model's metadata); keys this version does not know are refused."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise EdgexError(f"unknown model config keys {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

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
        if self.pointwise_channels and (self.conv != "separable" or self.segments is not None):
            raise EdgexError("pointwise channel counts apply to plain separable convolutions (no segments)")
        if any(count < 1 for _, count in self.pointwise_channels):
            raise EdgexError(f"pointwise channel counts must be >= 1, got {dict(self.pointwise_channels)}")
        if self.segments is not None:
            if self.conv != "separable":
                raise EdgexError(f"segments apply to separable convolutions (conv='separable'), got conv={self.conv!r}")
            check_segments(self.segments, self.separable_input_channels(), f"width {self.width:g}")

    def separable_input_channels(self) -> tuple[int, ...]:
        """Input channels of every separable convolution, in model order (what segments must divide)."""
        c = self.channels
        entry = (c(64), c(128), c(128), c(256), c(256), c(728))
        return (*entry, *(c(728),) * (3 * self.middle_blocks), c(728), c(728), c(1024), c(1536))

    @property
    def label(self) -> str:
        """The convolution this config uses: separable, regular or segments:G."""
        return f"segments:{self.segments}" if self.segments is not None else self.conv

    def channels(self, filters: int) -> int:
        """Channels of a layer that has ``filters`` at width 1.0: scaled, rounded to a multiple of 8, at least 8."""
        return max(8, int(filters * self.width + 4) // 8 * 8)

    def replace(self, **changes) -> XceptionConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


def build_xception(config: XceptionConfig, name: str | None = None):
    """Build an uncompiled Keras (tf_keras) model from ``config``."""
    from devices.tensorflow import native_grouped_convolutions
    from devices.tfkeras import keras

    k = keras()
    blocks = _Blocks(config, k.layers)
    inputs = k.Input(shape=(config.input_size, config.input_size, 3), name="input")
    x = blocks.entry_flow(inputs)
    x = blocks.middle_flow(x)
    x = blocks.exit_flow(x)
    if config.include_top:
        x = blocks.classifier(x, mixed=k.mixed_precision.global_policy().compute_dtype != "float32")
    return native_grouped_convolutions(k.Model(inputs, x, name=name or _model_name(config)))


def _model_name(config: XceptionConfig) -> str:
    if config.segments is not None:
        return "xception_segments_" + config.segments.replace("/", "_")
    return "xception" if config.conv == "separable" else "xception_regular"


class _Blocks:
    """The layers of Xception, one method per step of the paper's figure 5."""

    def __init__(self, config: XceptionConfig, layers):
        self.config, self.layers, self.c = config, layers, config.channels

    def sep_conv(self, x, filters: int, name: str):
        config, layers = self.config, self.layers
        filters = dict(config.pointwise_channels).get(name, filters)
        if config.conv == "regular":
            return layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
        channels = int(x.shape[-1])
        groups = channels if config.segments is None else groups_for(config.segments, channels)
        if groups == channels and config.intermediate_activation == "none":
            return layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
        if groups == channels:  # G = C is the depthwise convolution itself: same layers as conv='separable'
            x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_depthwise")(x)
        else:
            x = layers.Conv2D(channels, 3, padding="same", groups=groups, use_bias=False, name=f"{name}_grouped")(x)
        if config.intermediate_activation != "none":
            x = layers.Activation(config.intermediate_activation, name=f"{name}_intermediate_act")(x)
        return layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pointwise")(x)

    def bn(self, x, name: str):
        return self.layers.BatchNormalization(momentum=self.config.bn_momentum, name=name)(x)

    def relu(self, x, name: str):
        return self.layers.Activation("relu", name=name)(x)

    def shortcut(self, x, filters: int, block: str):
        if not self.config.residual:
            return None
        conv = self.layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False, name=f"{block}_shortcut")
        return self.bn(conv(x), f"{block}_shortcut_bn")

    def merge(self, x, residual, block: str):
        return x if residual is None else self.layers.add([x, residual], name=f"{block}_add")

    def sep_conv_bn(self, x, filters: int, name: str):
        return self.bn(self.sep_conv(x, filters, name), f"{name}_bn")

    def downsampling_block(self, x, block: str, filters: tuple[int, int], first_relu: bool = True):
        """Two separable convolutions, a strided max pool, and a strided 1x1 shortcut."""
        residual = self.shortcut(x, filters[1], block)
        if first_relu:
            x = self.relu(x, f"{block}_sepconv1_act")
        x = self.sep_conv_bn(x, filters[0], f"{block}_sepconv1")
        x = self.relu(x, f"{block}_sepconv2_act")
        x = self.sep_conv_bn(x, filters[1], f"{block}_sepconv2")
        x = self.layers.MaxPooling2D(3, strides=2, padding="same", name=f"{block}_pool")(x)
        return self.merge(x, residual, block)

    def entry_flow(self, x):
        c, layers = self.c, self.layers
        x = layers.Conv2D(c(32), 3, strides=2, use_bias=False, name="block1_conv1")(x)
        x = self.relu(self.bn(x, "block1_conv1_bn"), "block1_conv1_act")
        x = layers.Conv2D(c(64), 3, use_bias=False, name="block1_conv2")(x)
        x = self.relu(self.bn(x, "block1_conv2_bn"), "block1_conv2_act")
        for number, filters in ((2, 128), (3, 256), (4, 728)):
            # block 2 follows conv2's ReLU directly
            x = self.downsampling_block(x, f"block{number}", (c(filters), c(filters)), first_relu=number != 2)
        return x

    def middle_flow(self, x):
        for i in range(self.config.middle_blocks):
            block = f"block{i + 5}"
            residual = x if self.config.residual else None
            for j in (1, 2, 3):
                x = self.relu(x, f"{block}_sepconv{j}_act")
                x = self.sep_conv_bn(x, self.c(728), f"{block}_sepconv{j}")
            x = self.merge(x, residual, block)
        return x

    def exit_flow(self, x):
        c, blocks = self.c, self.config.middle_blocks
        x = self.downsampling_block(x, f"block{blocks + 5}", (c(728), c(1024)))
        block = f"block{blocks + 6}"
        for j, filters in ((1, 1536), (2, 2048)):
            x = self.sep_conv_bn(x, c(filters), f"{block}_sepconv{j}")
            x = self.relu(x, f"{block}_sepconv{j}_act")
        return x

    def classifier(self, x, mixed: bool):
        layers = self.layers
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if self.config.dropout:
            x = layers.Dropout(self.config.dropout, name="dropout")(x)
        # Under a mixed precision policy the classifier stays float32 so that softmax is computed in full precision.
        dtype = "float32" if mixed else None
        return layers.Dense(self.config.classes, activation="softmax", name="predictions", dtype=dtype)(x)
