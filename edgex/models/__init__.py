"""Model presets: a registry of named Xception configurations and a factory over it.

>>> from edgex.models import create_model, list_presets
>>> list_presets()
['mini', 'paper', 'tiny']
>>> model = create_model("mini", classes=10)            # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable

from devices.errors import choice_error
from edgex.models.xception import XceptionConfig, build_xception

_PRESETS: dict[str, Callable[[], XceptionConfig]] = {}


def register_preset(fn: Callable[[], XceptionConfig]) -> Callable[[], XceptionConfig]:
    """Register a preset under its function's name."""
    if fn.__name__ in _PRESETS:
        raise ValueError(f"preset {fn.__name__!r} is already registered")
    _PRESETS[fn.__name__] = fn
    return fn


@register_preset
def paper() -> XceptionConfig:
    """Chollet 2017 exactly: 299x299 input, width 1.0, 8 middle blocks (22.9 M parameters with 1000 classes)."""
    return XceptionConfig()


@register_preset
def mini() -> XceptionConfig:
    """Small enough to train on 2 CPU cores in under a minute on the embedded digits (32x32, width 3/8, 1 middle
    block). Wide enough that weights, not per-channel quantization parameters, make up an int8 file."""
    return XceptionConfig(classes=10, input_size=32, width=0.375, middle_blocks=1, bn_momentum=0.9)


@register_preset
def tiny() -> XceptionConfig:
    """The smallest complete Xception, for tests: 32x32, width 1/8, no middle block."""
    return XceptionConfig(classes=10, input_size=32, width=0.125, middle_blocks=0, bn_momentum=0.9)


def list_presets() -> list[str]:
    return sorted(_PRESETS)


def preset_config(name: str, **overrides) -> XceptionConfig:
    """The config of preset ``name`` with ``overrides`` (options left as None keep the preset's value)."""
    if name not in _PRESETS:
        raise choice_error("preset", name, list_presets())
    config = _PRESETS[name]()
    changes = {k: v for k, v in overrides.items() if v is not None}
    return config.replace(**changes) if changes else config


def create_model(preset: str = "mini", **overrides):
    """Build the Keras model of a preset, e.g. ``create_model("paper", conv="regular")``."""
    return build_xception(preset_config(preset, **overrides))


__all__ = ["XceptionConfig", "build_xception", "create_model", "list_presets", "preset_config", "register_preset"]
