"""Metadata that travels with every artifact, so later commands never ask for input shapes or scales again."""

from __future__ import annotations

from pathlib import Path

from devices.errors import EdgexError
from devices.files import read_metadata, sha256_file
from devices.preprocess import Preprocessing


def model_metadata(path: str | Path) -> dict:
    """Metadata of a model artifact; a foreign model without any gets sensible defaults filled in later."""
    return read_metadata(path)


def preprocessing_of(meta: dict) -> Preprocessing:
    return Preprocessing.from_dict(meta.get("preprocessing"))


def class_names_of(meta: dict, classes: int | None = None) -> tuple[str, ...]:
    names = meta.get("class_names")
    if names:
        return tuple(names)
    if classes is None:
        raise EdgexError("the model has no metadata with class names")
    return tuple(str(i) for i in range(classes))


def input_size_of(meta: dict, fallback: int | None = None) -> int:
    shape = meta.get("input_shape")
    if shape:
        return int(shape[0])
    if fallback is None:
        raise EdgexError("the model has no metadata with its input shape")
    return fallback


def source_record(path: str | Path) -> dict:
    path = Path(path)
    return {"path": str(path), "sha256": sha256_file(path)}
