"""Network changes on a trained Xception that keep its weights: middle-flow blocks dropped, pointwise output
channels pruned, a lower input resolution; and a narrower or shallower student built fresh.

Xception's middle flow is residual: a block can go and the others keep their weights (the first ones go first).
91% of its MACs sit in 1x1 pointwise convolutions; the output channels of those whose result reaches another
convolution or the classifier (not a residual addition, which fixes the count) can be pruned, together with what
depends on them: the BatchNormalization after it and the next layer's input channels. Channels are ranked by the
norm of the convolution as folded with its BatchNormalization (kernel norm x |gamma| / sqrt(variance + epsilon)),
so that a channel BatchNormalization scales down ranks low. Global average pooling makes the weights independent
of the input size, so a lower resolution keeps every weight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from devices.errors import EdgexError
from edgex.models.xception import MIN_INPUT_SIZE, XceptionConfig

CHANNEL_MULTIPLE = 8  # pruned counts stay multiples of 8, as the width's are (SIMD lanes of int8 kernels)
_PASS_THROUGH = ("BatchNormalization", "Activation", "ReLU", "Dropout", "MaxPooling2D")


@dataclass(frozen=True)
class NetworkChange:
    """How a candidate's network differs from the model being tuned."""

    drop_blocks: int = 0  # middle-flow blocks removed, the first ones
    prune: float = 0.0  # share of each prunable pointwise convolution's output channels removed
    input_size: int | None = None  # a lower input resolution (None: the model's)
    width: float = 1.0  # below 1: a student at this fraction of the model's width, trained by distillation

    @property
    def keeps_weights(self) -> bool:
        return self.width >= 1.0

    @property
    def is_identity(self) -> bool:
        return self == NetworkChange()

    def key(self, config: XceptionConfig) -> str:
        """A folder name that says what changed."""
        parts = [f"drop{self.drop_blocks}"] if self.drop_blocks else []
        parts += [f"prune{round(100 * self.prune)}"] if self.prune else []
        parts += [f"{self.input_size}px"] if self.input_size and self.input_size != config.input_size else []
        parts += [f"width{round(100 * self.width)}"] if not self.keeps_weights else []
        return "-".join(parts) or "unchanged"

    def describe(self, config: XceptionConfig) -> str:
        parts = [f"{self.drop_blocks} middle block(s) dropped"] if self.drop_blocks else []
        parts += [f"{self.prune:.0%} of pointwise channels pruned"] if self.prune else []
        if self.input_size and self.input_size != config.input_size:
            parts += [f"{self.input_size} px input"]
        parts += [f"student at {self.width:.2f}x width, distilled"] if not self.keeps_weights else []
        return ", ".join(parts) or "unchanged network"

    def check(self, config: XceptionConfig) -> None:
        if not 0 <= self.drop_blocks <= config.middle_blocks:
            raise EdgexError(f"cannot drop {self.drop_blocks} of the model's {config.middle_blocks} middle blocks")
        if not 0 <= self.prune < 1:
            raise EdgexError(f"the pruned share must be in [0, 1), got {self.prune}")
        if self.input_size is not None and not MIN_INPUT_SIZE <= self.input_size <= config.input_size:
            raise EdgexError(f"input size {self.input_size} is outside [{MIN_INPUT_SIZE}, {config.input_size}]")
        if not 0 < self.width <= 1:
            raise EdgexError(f"a student's width fraction must be in (0, 1], got {self.width}")
        if self.prune and (config.conv != "separable" or config.segments is not None or config.pointwise_channels):
            raise EdgexError("channel pruning applies to plain separable Xception models")


def changed_config(config: XceptionConfig, change: NetworkChange) -> XceptionConfig:
    """The config of the changed network, before channel pruning (which needs the weights)."""
    change.check(config)
    return config.replace(
        middle_blocks=config.middle_blocks - change.drop_blocks,
        input_size=change.input_size or config.input_size,
        width=config.width * change.width,
    )


def apply_change(model, config: XceptionConfig, change: NetworkChange):
    """(the changed Keras model, its config): a student is built fresh; otherwise the model's weights are carried
    over, sliced where channels were pruned."""
    from edgex.models import build_xception

    target = changed_config(config, change)
    if not change.keeps_weights:
        return build_xception(target), target
    kept = pruned_channels(model, change.prune) if change.prune else {}
    renamed = {_new_name(name, change.drop_blocks): index for name, index in kept.items()}
    overrides = tuple((name, len(index)) for name, index in renamed.items() if name is not None)
    target = target.replace(pointwise_channels=overrides)
    changed = build_xception(target)
    _carry_weights(model, changed, change.drop_blocks, kept)
    return changed, target


def _original_name(name: str, dropped: int) -> str:
    """The layer of the original model that a layer of the changed one takes its weights from: the first
    ``dropped`` middle blocks are gone, so every later block is numbered ``dropped`` lower."""
    found = re.match(r"block(\d+)_(.*)", name)
    if not found or int(found.group(1)) < 5:
        return name
    return f"block{int(found.group(1)) + dropped}_{found.group(2)}"


def _new_name(name: str, dropped: int) -> str | None:
    """The inverse of _original_name; None for a layer of a dropped block."""
    found = re.match(r"block(\d+)_(.*)", name)
    if not found or int(found.group(1)) < 5:
        return name
    number = int(found.group(1)) - dropped
    return None if number < 5 else f"block{number}_{found.group(2)}"


def _inbound(layer) -> list:
    layers = []
    for node in layer._inbound_nodes:
        found = node.inbound_layers
        layers += list(found) if isinstance(found, (list, tuple)) else [found]
    return layers


def prunable_layers(model) -> list[str]:
    """The separable convolutions whose output channels can be pruned: their result reaches (through
    BatchNormalization, activations or pooling) only convolutions, or the classifier through global pooling."""
    consumers: dict[str, list] = {}
    for layer in model.layers:
        for before in _inbound(layer):
            consumers.setdefault(before.name, []).append(layer)

    def reaches_only_convolutions(layer) -> bool:
        nexts = consumers.get(layer.name, [])
        for after in nexts:
            kind = type(after).__name__
            if kind in ("SeparableConv2D", "DepthwiseConv2D") or (kind == "Conv2D" and after.groups == 1):
                continue
            if kind == "GlobalAveragePooling2D":
                if any(type(d).__name__ not in ("Dense", "Dropout") for d in consumers.get(after.name, [])):
                    return False
                continue
            if kind not in _PASS_THROUGH or not reaches_only_convolutions(after):
                return False
        return bool(nexts)

    separable = [layer for layer in model.layers if type(layer).__name__ == "SeparableConv2D"]
    return [layer.name for layer in separable if reaches_only_convolutions(layer)]


def pruned_channels(model, share: float) -> dict[str, np.ndarray]:
    """Prunable separable convolution -> the output channels it keeps (sorted), ranked by folded weight norm."""
    kept = {}
    layers = {layer.name: layer for layer in model.layers}
    for name in prunable_layers(model):
        pointwise = layers[name].get_weights()[1]  # (1, 1, C_in, C_out)
        norms = np.linalg.norm(pointwise.reshape(-1, pointwise.shape[-1]), axis=0)
        bn = layers.get(f"{name}_bn")
        if bn is not None:
            gamma, _, _, variance = bn.get_weights()
            norms = norms * np.abs(gamma) / np.sqrt(variance + bn.epsilon)
        count = pointwise.shape[-1]
        keep = max(CHANNEL_MULTIPLE, round(count * (1 - share) / CHANNEL_MULTIPLE) * CHANNEL_MULTIPLE)
        if keep < count:
            kept[name] = np.sort(np.argsort(-norms, kind="stable")[:keep])
    return kept


def _carry_weights(source, target, dropped: int, kept: dict[str, np.ndarray]) -> None:
    """Copy every weight of ``target`` from its layer in ``source``, keeping the channels that survived: a layer's
    input channels are those its inbound layer kept, its output channels its own (pruned convolutions) or its
    input's (channel-wise layers)."""
    originals = {layer.name: layer for layer in source.layers}
    out_kept: dict[str, np.ndarray | None] = {}
    for layer in target.layers:
        inputs = [out_kept.get(before.name) for before in _inbound(layer)]
        kept_in = inputs[0] if inputs else None
        if any(k is not None for k in inputs[1:]) or (kept_in is not None and len(inputs) > 1):
            raise EdgexError(f"{layer.name} adds tensors whose channels were pruned")
        own = kept.get(_original_name(layer.name, dropped))
        out_kept[layer.name] = own if own is not None else _passes_channels(layer, kept_in)
        weights = originals[_original_name(layer.name, dropped)].get_weights() if layer.weights else []
        if weights:
            layer.set_weights(_sliced(layer, weights, kept_in, own))


def _passes_channels(layer, kept_in):
    """The kept channels after a layer that does not choose its own: channel-wise layers keep their input's."""
    kind = type(layer).__name__
    if kind in ("Conv2D", "SeparableConv2D", "Dense") and not getattr(layer, "groups", 1) > 1:
        return None
    return kept_in


def _sliced(layer, weights: list[np.ndarray], kept_in, kept_out) -> list[np.ndarray]:
    kind = type(layer).__name__
    take_in = (lambda w, axis: w) if kept_in is None else (lambda w, axis: np.take(w, kept_in, axis=axis))
    take_out = (lambda w, axis: w) if kept_out is None else (lambda w, axis: np.take(w, kept_out, axis=axis))
    if kind == "SeparableConv2D":
        depthwise, pointwise, *bias = weights
        pointwise = take_out(take_in(pointwise, 2), 3)
        return [take_in(depthwise, 2), pointwise, *(take_out(b, 0) for b in bias)]
    if kind == "BatchNormalization":
        return [take_in(w, 0) for w in weights]
    if kind == "DepthwiseConv2D":
        depthwise, *bias = weights  # (k, k, C, 1)
        return [take_in(depthwise, 2), *(take_in(b, 0) for b in bias)]
    if kind == "Conv2D" and layer.groups == 1:
        kernel, *bias = weights
        return [take_in(kernel, 2), *bias]
    if kind == "Dense":
        kernel, *bias = weights
        return [take_in(kernel, 0), *bias]
    if kept_in is not None:
        raise EdgexError(f"cannot carry pruned channels through {kind} layer {layer.name}")
    return weights
