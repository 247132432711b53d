"""Metadata that travels with every artifact, so later commands never ask for input shapes or scales again."""

from __future__ import annotations

from devices.errors import EdgexError
from devices.preprocess import Preprocessing


def preprocessing_of(meta: dict) -> Preprocessing:
    return Preprocessing.from_dict(meta.get("preprocessing"))


def class_names_of(meta: dict, classes: int | None = None) -> tuple[str, ...]:
    names = meta.get("class_names")
    if names:
        return tuple(names)
    if classes is None:
        raise EdgexError("the model has no metadata with class names")
    return tuple(str(i) for i in range(classes))
