"""Transfer learning pieces: start from any Keras image classifier (``--from``), replace its head, freeze and unfreeze
blocks for the two phases of fine-tuning, and recompute BatchNormalization statistics after a short training."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from devices.errors import EdgexError

if TYPE_CHECKING:
    from devices.metadata import ArtifactMetadata

HEAD_NAME = "predictions"


@dataclass(frozen=True)
class Phase:
    """One fit of a training run: which layers train, for how long, at which learning rate."""

    number: int  # 1-based position in the run
    name: str  # "train" (from scratch), "head" (backbone frozen) or "fine-tune" (top blocks unfrozen)
    epochs: int  # the head phase: the most it trains (it stops early)
    lr: float | None  # None: the optimizer's default
    unfreeze: str = "all"  # blocks that train besides the head: "all", "0".."N" (head phase: "0")
    bn_frozen: bool = False  # BatchNormalization in inference mode, its statistics kept

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.name == "train":
            return f"training every layer for {self.epochs} epochs"
        if self.name == "head":
            return (
                f"phase {self.number}: the new head only, on backbone features computed once (backbone frozen, "
                f"BatchNormalization in inference mode), up to {self.epochs} epochs with early stopping on the "
                "validation loss"
            )
        blocks = "all blocks" if self.unfreeze == "all" else f"the top {self.unfreeze} blocks"
        return (
            f"phase {self.number}: fine-tuning {blocks} and the head at lr {self.lr:g}, BatchNormalization frozen, "
            f"{self.epochs} epochs"
        )


@dataclass(frozen=True)
class Starting:
    """A model to fine-tune given with ``--from``: its input side, recorded preprocessing and class names."""

    path: str
    input_size: int
    classes: int
    metadata: ArtifactMetadata


@dataclass(frozen=True)
class FromModelReport:
    """What starting from a ``--from`` model did to its classifier head."""

    path: str
    head_replaced: bool  # a new head for other classes
    classes_before: int

    def to_dict(self) -> dict:
        return {"from": self.path, "head_replaced": self.head_replaced, "classes_before": self.classes_before}

    def summary_lines(self) -> list[str]:
        head = "replaced (new classes)" if self.head_replaced else "kept"
        return [f"started from {self.path}: classifier head {head}"]


def parse_unfreeze(value) -> str:
    text = str(value).strip().lower()
    if text == "all" or (text.isdigit() and int(text) >= 0):
        return text
    raise EdgexError(f"--unfreeze takes a number of blocks (0, 1, 2, ...) or all, got {value!r}")


def inspect_classifier(path: str | Path):
    """Load ``path`` and check that it is an image classifier: one (H, W, 3) input, one (classes,) output of a Dense
    layer. Returns the model and a :class:`Starting`."""
    from devices.metadata import read_metadata
    from devices.tensorflow import load_keras_model

    model = load_keras_model(path)
    why = _not_a_classifier(model)
    if why:
        raise EdgexError(f"--from {path} is not an image classifier: {why}")
    shape = model.inputs[0].shape
    return model, Starting(str(path), int(shape[1]), int(model.outputs[0].shape[-1]), read_metadata(path))


def _not_a_classifier(model) -> str | None:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return f"it has {len(model.inputs)} inputs and {len(model.outputs)} outputs (expected 1 and 1)"
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[3] != 3 or shape[1] is None or shape[1] != shape[2]:
        return f"its input is {shape}, not a fixed square RGB image (None, S, S, 3)"
    out = tuple(model.outputs[0].shape)
    if len(out) != 2 or not out[1] or out[1] < 2:
        return f"its output is {out}, not one score per class (None, classes)"
    if head_layer(model) is None:
        return "it has no Dense classifier layer"
    return None


def head_layer(model):
    """The classifier: the last Dense layer, when nothing but activations and reshapes follow it."""
    from devices.tfkeras import keras

    dense = keras().layers.Dense
    weighted = [layer for layer in model.layers if layer.weights]
    return weighted[-1] if weighted and isinstance(weighted[-1], dense) else None


def with_head(model, classes: int):
    """``model`` with a fresh softmax head for ``classes`` classes when the count differs or its output is not a
    softmax; returns (model, replaced)."""
    from devices.tfkeras import keras

    k = keras()
    head = head_layer(model)
    softmax = getattr(head.activation, "__name__", "") == "softmax" and model.layers[-1] is head
    if head.units == classes and softmax:
        return model, False
    outputs = k.layers.Dense(
        classes, activation="softmax", kernel_initializer="zeros", name=_free_name(model, HEAD_NAME)
    )(head.input)
    return k.Model(model.inputs, outputs, name=model.name), True


def zero_head(model) -> None:
    """Start a new classifier head at zero, every class equally likely (Big Transfer's choice): pretrained features
    are large after global pooling, so a randomly initialized head starts saturated (a loss of 10 instead of ln C on
    the digits) and phase 1 spends its few steps undoing that."""
    head = head_layer(model)
    head.set_weights([w * 0 for w in head.get_weights()])


def _free_name(model, name: str) -> str:
    names = {layer.name for layer in model.layers}
    return name if name not in names else next(f"{name}_{i}" for i in range(1, 1000) if f"{name}_{i}" not in names)


def _flat_layers(model):
    """Every layer, nested models opened (the Keras guide's ``base_model`` inside a classifier)."""
    from devices.tfkeras import keras

    for layer in model.layers:
        if isinstance(layer, keras().Model):
            yield from _flat_layers(layer)
        else:
            yield layer


def _is_bn(layer) -> bool:
    return "BatchNormalization" in type(layer).__name__


def model_blocks(model) -> list[str]:
    """Names of the model's blocks, bottom to top: the leading ``<word><number>`` of layer names (``block5`` in
    Xception's ``block5_sepconv1``, ``block_3`` in MobileNetV2's ``block_3_expand``), the head left out."""
    head = head_layer(model)
    blocks: list[str] = []
    for layer in _flat_layers(model):
        if not layer.weights or layer is head or _is_bn(layer):
            continue
        key = block_of(layer.name)
        if key not in blocks:
            blocks.append(key)
    return blocks


def block_of(name: str) -> str:
    match = re.match(r"^(.*?\d+)(?:_|$)", name)
    return match.group(1) if match else name.rsplit("_", 1)[0]


def set_trainable(model, phase: Phase) -> list[str]:
    """Freeze and unfreeze layers for ``phase``; returns the blocks that train (besides the head)."""
    head = head_layer(model)
    blocks = model_blocks(model)
    if phase.unfreeze == "all":
        chosen = blocks
    else:
        count = int(phase.unfreeze)
        if count > len(blocks):
            raise EdgexError(
                f"--unfreeze {count} is more than the {len(blocks)} blocks of this model "
                f"({blocks[0]} ... {blocks[-1]}); use 0 to {len(blocks)} or all"
            )
        chosen = blocks[len(blocks) - count :] if count else []
    training = set(chosen)
    model.trainable = True
    for layer in model.layers:
        layer.trainable = True  # nested models stay open; their own layers decide
    for layer in _flat_layers(model):
        if layer is head:
            layer.trainable = True
        elif _is_bn(layer):
            layer.trainable = not phase.bn_frozen
        else:
            layer.trainable = phase.name == "train" or block_of(layer.name) in training
    return chosen


def unfreeze_all(model) -> None:
    """Every layer trainable again, so that the saved model trains normally when it is loaded later."""
    model.trainable = True
    for layer in _flat_layers(model):
        layer.trainable = True


def recompute_bn_statistics(model, images, preprocessing, batch_size: int = 64) -> int:
    """Replace every BatchNormalization layer's moving mean and variance with their average over ``images``
    under the final weights. A few dozen optimizer steps leave the moving averages (momentum 0.9-0.99) far from
    the statistics the last weights produce, so a model can reach 100% on the training batches and chance on
    validation; this gives the statistics their converged value. Returns the number of images used."""
    layers = [layer for layer in _flat_layers(model) if _is_bn(layer) and layer.trainable]
    if not layers or len(images) == 0:
        return 0
    momenta = [layer.momentum for layer in layers]
    try:
        for i, start in enumerate(range(0, len(images), batch_size)):
            for layer in layers:  # a running mean over the batches: step i weighs 1 / (i + 1)
                layer.momentum = 1.0 - 1.0 / (i + 1)
            model(preprocessing.apply(images[start : start + batch_size]), training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(images)
