"""The pipeline's recipe: typed options for every stage, read from YAML and command-line overrides.

The YAML file names the options it changes; everything else keeps the defaults below::

    preset: tiny
    train: {epochs: 5}
    convert: {onnx: [fp32]}
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

from converters.registry import CALIBRATION_SAMPLES
from devices.errors import EdgexError, first_line


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float | None = None  # None: the optimizer's default
    augment: tuple[str, ...] = ("crop",)
    # Starting from pretrained weights or another model (edgex train --weights / --from): then training runs the
    # two-phase schedule, head_epochs with the backbone frozen and epochs with the top `unfreeze` blocks.
    weights: str = "none"  # none, imagenet, or a .h5 / .weights.h5 / .keras file
    from_model: str | None = field(default=None, metadata={"key": "from"})  # a Keras classifier to fine-tune
    head_epochs: int = 200  # the most: the head trains on cached features and stops early
    unfreeze: str = "all"  # a number of blocks, or all
    fine_tune_lr: float = 1e-5
    preprocessing: str | None = None  # xception, caffe, torch, raw; None: the model's own, else xception
    recompute_bn: bool = False  # BatchNormalization statistics recomputed on the training images first


@dataclass(frozen=True)
class TwinOptions:
    """The regular-convolution twin, there for the latency A/B, which its weights do not change: one epoch gives it a
    sane accuracy."""

    enabled: bool = True
    epochs: int = 1
    # Trained (and converted for the A/B) in a second process while prune, quantize, convert and evaluate run; it is
    # done before anything is timed.
    background: bool = True


@dataclass(frozen=True)
class PruneOptions:
    enabled: bool = True
    sparsity: float = 0.75
    epochs: int = 4
    schedule: str = "polynomial"


@dataclass(frozen=True)
class QuantizeOptions:
    int8: bool = True  # post-training int8
    qat: bool = True  # quantization-aware training, then int8
    qat_epochs: int = 1
    calib_samples: int = CALIBRATION_SAMPLES
    max_drop: float = 1.0  # points of top-1


@dataclass(frozen=True)
class ConvertOptions:
    tflite: tuple[str, ...] = ("fp32", "fp16", "dynamic")
    onnx: tuple[str, ...] = ("fp32", "int8")
    edgetpu: bool = True
    opset: int = 17


@dataclass(frozen=True)
class BenchOptions:
    threads: int | None = None  # None: the runtime's default
    warmup: int = 3
    runs: int = 20
    min_seconds: float = 0.3
    max_seconds: float = 20.0


@dataclass(frozen=True)
class CompareOptions:
    """The model-level A/B: Xception against its twin."""

    enabled: bool = True
    runtimes: tuple[str, ...] = ("litert", "onnxruntime")
    precisions: tuple[str, ...] = ("fp32", "int8")
    breakdown: tuple[str, ...] = ("onnxruntime",)  # runtimes whose per-op time breakdown is measured


@dataclass(frozen=True)
class SweepOptions:
    """The layer-level sweep."""

    enabled: bool = True
    # "model" (the layers of the trained model), "xception" (the paper network at input_size) or a file.
    shapes: str = "model"
    input_size: int = 299
    variants: tuple[str, ...] = ("regular", "separable")
    precisions: tuple[str, ...] = ("fp32", "int8")
    runtimes: tuple[str, ...] = ("litert",)
    threads: int | None = 1


@dataclass(frozen=True)
class StudyOptions:
    """The paper's spectrum and ablations (``edgex study``), trained with several seeds: off by default (minutes to
    tens of minutes per study on 2 cores)."""

    enabled: bool = False
    studies: tuple[str, ...] = ("activation",)  # spectrum, activation, residual, inception
    seeds: int = 2
    epochs: int = 2
    preset: str | None = None  # None: each study's own default (tiny; paper at 75 px for inception)
    runtimes: tuple[str, ...] = ("litert",)  # latency of each variant's seed-0 model
    precisions: tuple[str, ...] = ("fp32", "int8")


@dataclass(frozen=True)
class TuneOptions:
    """``edgex tune`` on the trained model: the fastest artifact within the gate, measured on the recipe's first
    device; off by default (it searches for as long as its budget says). When on, deploy ships its winner."""

    enabled: bool = False
    budget: str = "10m"  # 90s, 20m, 2h
    trials: int | None = None  # candidates at most within the budget; None: the budget decides
    max_drop: float | None = None  # points of top-1; None: report.max_drop
    levers: tuple[str, ...] = ("drop-blocks", "prune", "resolution", "student")
    epochs: int = 12  # the most epochs a changed network trains


@dataclass(frozen=True)
class DeployOptions:
    enabled: bool = True
    target: str = "rpi4"
    eval_data: bool = True  # ship the validation split in the bundle


@dataclass(frozen=True)
class ReportOptions:
    max_drop: float = 1.0  # the accuracy gate of the best variants, in points of top-1


@dataclass(frozen=True)
class Recipe:
    """Every option of every stage. ``to_json()`` is what recipe.json holds and what the stage hashes cover."""

    data: str = "digits"  # digits (embedded), an image folder or tfds:NAME
    preset: str = "mini"
    devices: tuple[str, ...] = ("cpu",)
    seed: int = 0
    train: TrainOptions = field(default_factory=TrainOptions)
    twin: TwinOptions = field(default_factory=TwinOptions)
    prune: PruneOptions = field(default_factory=PruneOptions)
    quantize: QuantizeOptions = field(default_factory=QuantizeOptions)
    convert: ConvertOptions = field(default_factory=ConvertOptions)
    bench: BenchOptions = field(default_factory=BenchOptions)
    compare: CompareOptions = field(default_factory=CompareOptions)
    sweep: SweepOptions = field(default_factory=SweepOptions)
    study: StudyOptions = field(default_factory=StudyOptions)
    tune: TuneOptions = field(default_factory=TuneOptions)
    deploy: DeployOptions = field(default_factory=DeployOptions)
    report: ReportOptions = field(default_factory=ReportOptions)

    def to_json(self) -> dict:
        return _mapping(self)

    @classmethod
    def from_json(cls, data: dict) -> Recipe:
        """A recipe from a (complete or partial) mapping; each value is checked against its option's type."""
        return _parse(cls, data, "")


DEFAULT_RECIPE = Recipe()


def _key(f) -> str:
    """The YAML key of a field: its name, unless that is a Python keyword (``from``)."""
    return f.metadata.get("key", f.name)


def _mapping(options) -> dict:
    """An options dataclass as the mapping YAML and JSON hold, keyed by YAML keys."""
    return {_key(f): _mapping(v) if is_dataclass(v := getattr(options, f.name)) else _plain(v) for f in fields(options)}


def _plain(value):
    """Tuples as lists, all the way down: the form YAML and JSON write."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _parse(cls, data: dict, where: str):
    hints = typing.get_type_hints(cls)
    names = {_key(f): f.name for f in fields(cls)}  # YAML key -> field name
    values = {}
    for key, value in data.items():
        if key not in names:
            raise EdgexError(f"unknown recipe key {where + key!r}; valid keys here: {', '.join(sorted(names))}")
        hint = hints[names[key]]
        if is_dataclass(hint):
            if not isinstance(value, dict):
                keys = ", ".join(_key(f) for f in fields(hint))
                raise EdgexError(f"recipe key {where + key!r} must be a mapping of: {keys}, got {value!r}")
            values[names[key]] = _parse(hint, value, f"{where}{key}.")
        else:
            values[names[key]] = _coerce(where + key, value, hint)
    return cls(**values)


def _coerce(key: str, value, hint):
    """``value`` as the type ``hint`` names (bool, int, float, str, a tuple of str, or one of them or None)."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        if value is None or value is False:
            return ()
        items = [value] if isinstance(value, str | os.PathLike) else value
        if not isinstance(items, list | tuple):
            raise EdgexError(f"recipe key {key!r} must be a list, got {value!r}")
        return tuple(_coerce(key, item, args[0]) for item in items)
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, str | os.PathLike):
        return str(value)
    if hint is str and isinstance(value, int) and not isinstance(value, bool):  # unfreeze: 2
        return str(value)
    kind = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}[hint]
    raise EdgexError(f"recipe key {key!r} must be {kind}, got {value!r}")


def _merge(base: dict, override: dict, where: str = "") -> dict:
    merged = dict(base)
    for key, value in override.items():
        if key not in base:
            raise EdgexError(f"unknown recipe key {where + key!r}; valid keys here: {', '.join(sorted(base))}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise EdgexError(f"recipe key {where + key!r} must be a mapping of: {', '.join(sorted(base[key]))}")
            merged[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            merged[key] = value
    return merged


def _read_yaml(config: str | Path) -> dict:
    import yaml

    path = Path(config)
    if not path.is_file():
        raise EdgexError(f"recipe file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise EdgexError(f"recipe {path} is not valid YAML: {first_line(exc)}") from exc
    if not isinstance(loaded, dict):
        raise EdgexError(f"recipe {path} must be a mapping of stage options")
    return loaded


def resolve_recipe(config: str | Path | None = None, overrides: dict | None = None) -> Recipe:
    """Defaults, then the YAML recipe file, then command-line overrides (``{"train.epochs": 5, "data": ...}``)."""
    merged = DEFAULT_RECIPE.to_json()
    if config:
        merged = _merge(merged, _read_yaml(config))
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        nested: dict = {leaf: value}
        for parent in reversed(parents):
            nested = {parent: nested}
        merged = _merge(merged, nested)
    return Recipe.from_json(merged)


def as_recipe(recipe: Recipe | dict) -> Recipe:
    """A Recipe from a Recipe or from the mapping recipe.json holds."""
    return recipe if isinstance(recipe, Recipe) else Recipe.from_json(recipe)


def check_recipe(recipe: Recipe) -> None:
    """Refuse values that a later stage would refuse, before anything is written or trained."""
    from converters import FORMATS
    from devices.errors import choice_error
    from devices.registry import parse_device
    from edgex.deploy import DEPLOY_TARGETS
    from edgex.models import preset_config

    preset_config(recipe.preset)
    if recipe.deploy.enabled and recipe.deploy.target not in DEPLOY_TARGETS:
        raise choice_error("deploy.target", recipe.deploy.target, DEPLOY_TARGETS)
    for fmt in ("tflite", "onnx"):
        for precision in getattr(recipe.convert, fmt):
            if precision not in FORMATS[fmt].precisions:
                raise choice_error(f"convert.{fmt} precision", precision, FORMATS[fmt].precisions)
    if not recipe.devices:
        raise EdgexError("recipe key 'devices' is empty: name at least one device, for example cpu")
    for device in recipe.devices:
        parse_device(device)
    if recipe.train.from_model and recipe.twin.enabled:
        raise EdgexError(
            f"recipe key 'train.from' fine-tunes {recipe.train.from_model}, which has no regular-convolution twin: "
            "add twin: {enabled: false} to the recipe"
        )
    if recipe.study.enabled:
        study_configs(recipe)  # an unknown study, zero seeds or a segments value the preset cannot take
    if recipe.tune.enabled:
        tune_config(recipe)  # a budget that cannot be read, a negative gate, an unknown lever


def tune_config(recipe: Recipe):
    """The ``edgex tune`` configuration of the recipe's tune stage."""
    from edgex.tune import TuneConfig, parse_budget

    t = recipe.tune
    return TuneConfig(
        data=recipe.data,
        device=recipe.devices[0],
        max_drop=recipe.report.max_drop if t.max_drop is None else t.max_drop,
        budget_s=parse_budget(t.budget),
        max_trials=t.trials,
        levers=tuple(t.levers),
        max_epochs=t.epochs,
        seed=recipe.seed,
    )


def study_configs(recipe: Recipe) -> list:
    """The ``edgex study`` configurations the recipe's study stage runs, on the recipe's data."""
    from edgex.study import StudyConfig

    s = recipe.study
    return [
        StudyConfig(
            study=name,
            seeds=s.seeds,
            epochs=s.epochs,
            data=recipe.data,
            preset=s.preset,
            runtimes=s.runtimes,
            precisions=s.precisions,
        )
        for name in s.studies
    ]


def write_recipe_yaml(path: Path, recipe: Recipe) -> None:
    import yaml

    from devices.files import write_text_atomic

    write_text_atomic(
        path,
        "# The resolved recipe of this run (defaults, recipe file, command-line flags).\n"
        + yaml.safe_dump(recipe.to_json(), sort_keys=False),
    )
