"""Starting weights for training: the published ImageNet Xception weights (fetched and cached the way Keras does
it) or any weights/model file, matched to the model by layer name and shape, with a report of what was loaded.

>>> report = load_starting_weights(model, "imagenet", config)      # doctest: +SKIP
>>> report.loaded, report.head_skipped, report.mismatched            # doctest: +SKIP
(234, 0, ())
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from devices.errors import EdgexError, first_line

WEIGHTS_SUFFIXES = (".h5", ".weights.h5", ".keras")
HEAD_LAYER = "predictions"
MIN_IMAGENET_INPUT = 71  # keras.applications.Xception refuses smaller inputs


@dataclass(frozen=True)
class PublishedWeights:
    """A file that ``keras.utils.get_file`` fetches into the Keras cache and checks by hash."""

    file: str
    origin: str
    md5: str


# The exact name, address and hash that tf_keras.applications.xception uses for include_top=False, so that a file
# Keras downloaded once is found again (and one edgex downloads serves Keras too).
IMAGENET_XCEPTION_NOTOP = PublishedWeights(
    "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "https://storage.googleapis.com/tensorflow/keras-applications/xception/"
    "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "b0042744bf5b25fce3cb969f33bebb97",
)


@dataclass(frozen=True)
class WeightsReport:
    """What loading starting weights did, tensor by tensor."""

    source: str  # "imagenet" or the file given
    loaded: int  # tensors copied into the model
    head_skipped: int  # tensors of the file's classifier head, left out because the classes differ
    mismatched: tuple[str, ...] = ()  # "layer: why" for layers present in both whose weights could not be used
    not_in_file: int = 0  # model tensors the file has nothing for (left at their initial values)
    unused: int = 0  # file layers the model has no layer for

    def to_dict(self) -> dict:
        data = asdict(self)
        data["mismatched"] = list(self.mismatched)
        return data

    def summary_lines(self) -> list[str]:
        lines = [
            f"weights from {self.source}: {self.loaded} tensors loaded, {self.head_skipped} skipped as the "
            f"classifier head, {self.not_in_file} not in the file, {self.unused} file layers unused"
        ]
        if self.mismatched:
            more = f" and {len(self.mismatched) - 5} more" if len(self.mismatched) > 5 else ""
            lines.append(f"{len(self.mismatched)} layers did not match: {'; '.join(self.mismatched[:5])}{more}")
        return lines


def keras_cache_dir() -> Path:
    """Keras' cache folder: $KERAS_HOME, else ~/.keras (downloaded weights go to its models/ subfolder)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


def fetch_published(weights: PublishedWeights) -> Path:
    """The cached file, downloaded through ``keras.utils.get_file`` when missing; one error line when offline."""
    from devices.tfkeras import keras

    folder = keras_cache_dir() / "models"
    cached = folder / weights.file
    had_file = cached.is_file()
    try:
        return Path(
            keras().utils.get_file(
                weights.file,
                weights.origin,
                cache_subdir="models",
                file_hash=weights.md5,
                cache_dir=str(keras_cache_dir()),
            )
        )
    except Exception as exc:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        why = text.split(" -- ")[-1][:120]  # get_file: "URL fetch failure on URL: code -- reason"
        if had_file:
            raise EdgexError(
                f"{cached} does not have the published md5 {weights.md5} and a fresh copy could not be "
                f"downloaded ({why}); replace it with the file from {weights.origin}"
            ) from None
        raise EdgexError(
            f"the ImageNet weights {weights.file} are not in the Keras cache and could not be downloaded "
            f"({why}); put the file in {folder}/"
        ) from None


def imagenet_compatible(config) -> bool:
    """Whether an XceptionConfig has the graph of keras.applications.Xception (any input side >= 71)."""
    return (
        config.conv == "separable"
        and float(config.width) == 1.0
        and config.middle_blocks == 8
        and config.intermediate_activation == "none"
        and config.residual
        and config.input_size >= MIN_IMAGENET_INPUT
    )


def check_imagenet_compatible(config, preset: str) -> None:
    from edgex.models import list_presets, preset_config

    if imagenet_compatible(config):
        return
    usable = [p for p in list_presets() if imagenet_compatible(preset_config(p))]
    raise EdgexError(
        f"--weights imagenet needs the graph of keras.applications.Xception (width 1.0, 8 middle blocks, separable "
        f"convolutions, residuals, input >= {MIN_IMAGENET_INPUT}); preset {preset!r} here has width {config.width}, "
        f"{config.middle_blocks} middle blocks, input {config.input_size}: use --preset {' or '.join(usable)} "
        "(any --input-size >= 71)"
    )


def imagenet_layer_weights(input_size: int) -> dict[str, list]:
    """{edgex layer name: weights} of the published no-top ImageNet Xception, loaded by Keras' own loader."""
    path = fetch_published(IMAGENET_XCEPTION_NOTOP)
    reference = keras_xception(input_size)
    try:
        reference.load_weights(str(path))
    except Exception as exc:
        raise EdgexError(f"{path} is not a loadable Xception weights file: {first_line(exc, 160)}") from None
    return {edgex: reference.get_layer(theirs).get_weights() for edgex, theirs in keras_layer_names(reference).items()}


def keras_xception(input_size: int):
    from devices.tfkeras import keras

    return keras().applications.Xception(weights=None, include_top=False, input_shape=(input_size, input_size, 3))


def keras_layer_names(reference) -> dict[str, str]:
    """{edgex name: keras.applications.Xception layer name} for every layer with weights. The two graphs are the same
    and name their layers alike, except the four residual shortcuts that Keras leaves unnamed (conv2d_N,
    batch_normalization_N), which are paired with edgex's blockN_shortcut(_bn) in the order they are built."""
    weighted = [layer for layer in reference.layers if layer.weights]
    unnamed = {"Conv2D": [], "BatchNormalization": []}
    for layer in weighted:
        if not layer.name.startswith("block"):
            unnamed[type(layer).__name__].append(layer.name)
    blocks = [2, 3, 4, 13]  # the blocks whose shortcut is a strided 1x1 convolution
    if len(unnamed["Conv2D"]) != len(blocks) or len(unnamed["BatchNormalization"]) != len(blocks):
        raise EdgexError("keras.applications.Xception no longer has the expected four residual shortcuts")
    mapping = {layer.name: layer.name for layer in weighted if layer.name.startswith("block")}
    for block, conv, bn in zip(blocks, _by_creation(unnamed["Conv2D"]), _by_creation(unnamed["BatchNormalization"])):
        mapping[f"block{block}_shortcut"] = conv
        mapping[f"block{block}_shortcut_bn"] = bn
    return mapping


def _by_creation(names: list[str]) -> list[str]:
    """Keras' automatic names count up as layers are created: conv2d, conv2d_1, conv2d_2, ..."""
    return sorted(names, key=lambda n: int(m.group(1)) if (m := re.search(r"_(\d+)$", n)) else 0)


def read_layer_weights(path: str | Path) -> dict[str, list]:
    """{layer name: weights} from a weights or model file (.h5 legacy weights or model, .weights.h5, .keras)."""
    path = Path(path)
    if not path.is_file():
        raise EdgexError(f"weights file not found: {path} (--weights takes imagenet, none or a file)")
    if not path.name.endswith(WEIGHTS_SUFFIXES):
        raise EdgexError(f"--weights {path}: expected imagenet, none or a file ending in {', '.join(WEIGHTS_SUFFIXES)}")
    if path.suffix == ".keras":
        from devices.tensorflow import load_keras_model

        return {layer.name: layer.get_weights() for layer in load_keras_model(path).layers if layer.weights}
    try:
        import h5py

        with h5py.File(path, "r") as f:
            group = f.get("model_weights", f)
            if "layer_names" in group.attrs:
                return _legacy_h5(group)
            if "layers" in group:
                return _saving_lib_h5(group["layers"])
    except OSError as exc:
        raise EdgexError(f"{path} is not a readable HDF5 weights file: {first_line(exc, 120)}") from None
    raise EdgexError(f"{path} holds no Keras layer weights (neither a weights file nor a model file)")


def _legacy_h5(group) -> dict[str, list]:
    """The h5 layout of ``save_weights("x.h5")`` and ``save("x.h5")``: layer_names, then weight_names per layer."""
    import numpy as np

    out = {}
    for raw in group.attrs["layer_names"]:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        weight_names = [w.decode() if isinstance(w, bytes) else str(w) for w in group[name].attrs["weight_names"]]
        if weight_names:
            out[name] = [np.asarray(group[name][w]) for w in weight_names]
    return out


def _saving_lib_h5(layers) -> dict[str, list]:
    """The layout of ``save_weights("x.weights.h5")``: layers/<generic name>/vars/<i>. The names are positional
    (``dense``, ``dense_1``: the n-th layer of a class), so they are matched by :func:`generic_layer_names`."""
    import numpy as np

    out = {}
    for name in layers:
        variables = layers[name].get("vars")
        if variables is not None and len(variables):
            out[f"@{name}"] = [np.asarray(variables[str(i)]) for i in range(len(variables))]
    return out


def generic_layer_names(model) -> dict[str, str]:
    """{"@" + positional name used by .weights.h5 files: model layer name}, e.g. "@dense_1" -> "predictions"."""
    from collections import Counter

    seen: Counter = Counter()
    names = {}
    for layer in model.layers:
        base = re.sub(r"(?<!^)(?=[A-Z])", "_", type(layer).__name__).lower().replace("conv2_d", "conv2d")
        names[f"@{base}" + (f"_{seen[base]}" if seen[base] else "")] = layer.name
        seen[base] += 1
    return names


def load_matching(
    model, layer_weights: dict[str, list], source: str, head: str | None = HEAD_LAYER, keep_head: bool = False
) -> WeightsReport:
    """Copy ``layer_weights`` into ``model`` layer by layer where the name and every shape agree; an error when
    nothing matches (a file for another architecture or configuration). The file's classifier head is skipped
    unless ``keep_head`` (the same classes): a head trained for other classes starts the new task saturated."""
    if any(name.startswith("@") for name in layer_weights):
        renamed = generic_layer_names(model)
        layer_weights = {renamed.get(name, name): value for name, value in layer_weights.items()}
    loaded = head_skipped = not_in_file = 0
    mismatched: list[str] = []
    for layer in model.layers:
        ours = layer.get_weights()
        if not ours:
            continue
        theirs = layer_weights.get(layer.name)
        if theirs is None:
            not_in_file += len(ours)
            continue
        shapes_ours = [tuple(w.shape) for w in ours]
        shapes_theirs = [tuple(w.shape) for w in theirs]
        if layer.name == head and not (keep_head and shapes_ours == shapes_theirs):
            head_skipped += len(theirs)
        elif shapes_ours == shapes_theirs:
            layer.set_weights(theirs)
            loaded += len(ours)
        else:
            mismatched.append(f"{layer.name} has shapes {shapes_theirs} in the file, {shapes_ours} in the model")
    model_names = {layer.name for layer in model.layers}
    unused = sum(1 for name in layer_weights if name not in model_names)
    if loaded == 0:
        why = f"; e.g. {mismatched[0]}" if mismatched else f"; the file's layers: {', '.join(list(layer_weights)[:4])}"
        raise EdgexError(f"no weights in {source} match the model by layer name and shape (another architecture?){why}")
    return WeightsReport(
        source=source,
        loaded=loaded,
        head_skipped=head_skipped,
        mismatched=tuple(mismatched),
        not_in_file=not_in_file,
        unused=unused,
    )


def check_weights_spec(spec: str, config, preset: str) -> None:
    """Fail before any data is loaded: an unusable preset for imagenet, a missing file, an offline cache."""
    if spec == "imagenet":
        check_imagenet_compatible(config, preset)
        fetch_published(IMAGENET_XCEPTION_NOTOP)
    elif spec not in ("none", "", None) and not Path(spec).is_file():
        raise EdgexError(f"weights file not found: {spec} (--weights takes imagenet, none or a file)")


def load_starting_weights(model, spec: str, config, preset: str, class_names=()) -> WeightsReport | None:
    """Load ``--weights`` (imagenet, none or a file) into an edgex Xception built from ``config``; a file's head
    is kept only when its recorded class names are ``class_names``."""
    if spec in ("none", "", None):
        return None
    from edgex.training.transfer import zero_head

    if spec == "imagenet":
        check_imagenet_compatible(config, preset)
        report = load_matching(model, imagenet_layer_weights(config.input_size), "imagenet")
        zero_head(model)
        return report
    from devices.metadata import read_metadata

    same_classes = bool(class_names) and read_metadata(spec).class_names == tuple(class_names)
    layer_weights = read_layer_weights(spec)
    report = load_matching(model, layer_weights, str(spec), keep_head=same_classes)
    if not (same_classes and HEAD_LAYER in layer_weights):
        zero_head(model)
    return report


def backbone_tensors(model, head: str = HEAD_LAYER) -> int:
    """Weight tensors outside the classifier head."""
    return sum(len(layer.weights) for layer in model.layers if layer.name != head)
