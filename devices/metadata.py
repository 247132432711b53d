"""Metadata that travels with every artifact (``model_int8.tflite`` -> ``model_int8.tflite.json``), so later
commands never ask for input shapes, classes or scales again: one typed record, read and written only here.

The file is a JSON object whose keys are the fields of :class:`ArtifactMetadata` (those left empty are left out),
beside the format- and command-specific sections that edgex writes but does not read back. Files of earlier edgex
versions (no ``version``) load as they are; a file of a newer schema is refused with a line saying what to do.
"""

from __future__ import annotations

import json
import math
import os
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from devices.errors import EdgexError
from devices.files import metadata_path, write_json_atomic
from devices.preprocess import XCEPTION, Preprocessing

if TYPE_CHECKING:
    from devices.base import TensorInfo

METADATA_VERSION = 1  # the schema this edgex writes; files without a version field were written before it
LEGACY_KEYS = ("kind",)  # written before version 1 (the format again, or "keras") and read by nothing: dropped


@dataclass(frozen=True)
class SourceRecord:
    """The model a conversion started from."""

    path: str
    sha256: str  # of the file, or of every file of a SavedModel folder ("" for a model converted from memory)
    kind: str  # "keras" or "saved_model"


@dataclass(frozen=True)
class DatasetRecord:
    """The data a model was trained on: enough to split it again exactly as training did."""

    spec: str  # digits, an image folder, tfds:NAME
    classes: tuple[str, ...] = ()
    train: int = 0  # images in the training split
    val: int = 0  # images in the validation split
    image_size: int = 0
    fingerprint: str = ""  # of the images, their labels and the split
    source: str = ""  # where the images came from, in words
    val_split: float | None = None  # the share held out for validation (None: the data set's own split)
    seed: int | None = None  # of the split (None: the data set's own split)


@dataclass(frozen=True)
class TrainingMetrics:
    """What training measured on the saved model."""

    val_top1: float
    val_loss: float
    history: dict = field(default_factory=dict)  # metric name -> its value after each epoch
    train_seconds: float = 0.0


@dataclass(frozen=True)
class Parity:
    """The parity check of an export against its source (see converters.parity)."""

    samples: int
    inputs: str  # "data" or "random"
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    criterion: str  # what was required
    passed: bool
    interval: tuple[float, float] = (0.0, 1.0)  # one-sided 95% bounds of the share of samples meeting it
    decided: bool = True  # the bounds settle the verdict; False: the point estimate on every planned sample did
    available: int = 0  # samples planned (the check may stop before)
    snr_db: float = float("nan")  # output-level: 10 log10(power of the outputs / power of the difference)
    cosine: float = float("nan")  # mean cosine similarity of each sample's outputs
    top1_meaningful: bool = True  # False: float top-1 margins below the quantized output's resolution
    resolution: float = 0.0  # the exported output's step (0 for float outputs)
    notes: tuple[str, ...] = field(default_factory=tuple)
    near_ties: int = 0  # samples whose source top-1 margin is within ``resolution`` (exact ties for float outputs)
    near_tie_agreement: float = float("nan")  # top-1 agreement on those samples
    confident_agreement: float = float("nan")  # top-1 agreement on the other samples

    def describe(self) -> str:
        """One line: verdict, criterion, samples used and the interval."""
        low, high = self.interval
        verdict = "passed" if self.passed else "FAILED"
        how = f"95% bounds {low:.1%}-{high:.1%}" if self.decided else "not decided at 95%, point estimate"
        return f"{verdict}: {self.criterion} on {self.samples} {self.inputs} samples ({how})"

    def describe_agreement(self) -> str:
        """Top-1 agreement overall, where the source is confident, and on near ties, with their sample counts."""
        confident, ties = self.samples - self.near_ties, self.near_ties
        parts = (
            f"{self.confident_agreement:.1%} of {confident} confident samples" if confident else "no confident samples",
            f"{self.near_tie_agreement:.1%} of {ties} near ties" if ties else "no near ties",
        )
        band = f"top-1 margin within one output step, {self.resolution:.3g}" if self.resolution else "exact ties"
        return f"{self.top1_agreement:.2%}: {', '.join(parts)} ({band})"


@dataclass(frozen=True)
class QuantizationRecord:
    """The inputs and outputs of an exported model as its runtime sees them (with int8 scales and zero points)."""

    inputs: tuple[TensorInfo, ...] = ()
    outputs: tuple[TensorInfo, ...] = ()


@dataclass(frozen=True)
class CalibrationRecord:
    """The samples whose activation ranges set an int8 model's scales."""

    samples: int
    data: str | None = None  # the data set they came from (None: random samples)


@dataclass(frozen=True)
class ConversionTiming:
    """Seconds each step of a conversion took."""

    loading_s: float
    conversion_s: float
    parity_s: float


@dataclass(frozen=True)
class ArtifactMetadata:
    """What edgex records next to an artifact. Every field but ``version`` may be empty (None, or an empty tuple or
    dict): a file edgex did not write has no metadata, and each writer records what it knows."""

    version: int = METADATA_VERSION  # the schema; files of earlier schemas are read into this one
    # What the file is
    format: str | None = None  # tflite, onnx, saved-model, edgetpu (None: a Keras file)
    precision: str | None = None  # fp32, fp16, dynamic, int8
    io: str | None = None  # input/output type: float, int8, uint8
    batch: str | None = None  # "1" or "dynamic"
    compiled_from: str | None = None  # an Edge TPU-compiled model: the int8 file beside it that the CPU runs
    created: str | None = None  # ISO 8601 UTC
    # What the model takes and gives
    input_shape: tuple[int, ...] = ()  # without the batch dimension
    class_names: tuple[str, ...] = ()
    preprocessing: Preprocessing | None = None  # None: not recorded (see input_preprocessing)
    # How it was made
    source: SourceRecord | None = None  # a conversion's source model
    dataset: DatasetRecord | None = None  # the data it was trained on
    model_config: dict | None = None  # an edgex Xception's edgex.models.XceptionConfig, as a dict
    preset: str | None = None  # the edgex.models preset it was built from
    weights: str | dict | None = None  # starting weights: "random", or training's report of what it loaded
    seed: int | None = None  # of training
    epochs: int | None = None
    params: int | None = None
    phases: tuple[dict, ...] = ()  # training's phases (head, fine-tune ...), each with the blocks that trained
    metrics: TrainingMetrics | None = None
    # How a conversion was checked
    parity: Parity | None = None
    quantization: QuantizationRecord | None = None
    calibration: CalibrationRecord | None = None
    timing: ConversionTiming | None = None
    notes: tuple[str, ...] = ()
    versions: dict = field(default_factory=dict)  # package -> version, of what wrote the file
    # Format- and command-specific sections that no edgex command reads back (opset, the Edge TPU report,
    # train_config, pruning, qat ...): kept as written, beside the fields above in the file.
    sections: dict = field(default_factory=dict)

    def __post_init__(self):
        clashes = sorted(set(self.sections) & {f.name for f in fields(self)})
        if clashes:
            raise ValueError(f"metadata sections {clashes} are fields of ArtifactMetadata: set the fields instead")

    @property
    def input_preprocessing(self) -> Preprocessing:
        """The preprocessing recorded, else Xception's (pixels scaled to [-1, 1])."""
        return self.preprocessing or XCEPTION

    def class_names_or_indices(self, classes: int | None = None) -> tuple[str, ...]:
        """The class names recorded, else the indices of a model with ``classes`` outputs ("0", "1", ...)."""
        if self.class_names:
            return self.class_names
        if classes is None:
            raise EdgexError("the model has no metadata with class names")
        return tuple(str(i) for i in range(classes))

    def with_sections(self, **sections) -> ArtifactMetadata:
        """This metadata with command-specific sections added (or replaced)."""
        return replace(self, sections={**self.sections, **sections})

    @property
    def conv(self) -> str | None:
        """An edgex Xception's convolution (separable or regular); None for other models."""
        return (self.model_config or {}).get("conv")

    def to_dict(self) -> dict:
        """The JSON object of the metadata file."""
        named = ((f.name, getattr(self, f.name)) for f in fields(self) if f.name != "sections")
        return {**{name: _plain(value) for name, value in named if not _empty(value)}, **self.sections}

    @classmethod
    def from_dict(cls, data: object, where: str = "metadata") -> ArtifactMetadata:
        """The metadata in a file's JSON object (of this schema or an earlier one); ``where`` names it in errors."""
        if not isinstance(data, dict):
            raise _unreadable(where, f"it holds {_shown(data)}, not a JSON object")
        version = data.get("version", 0)
        if type(version) is not int or version < 0:
            raise _unreadable(where, f"version should be a whole number, got {_shown(version)}")
        if version > METADATA_VERSION:
            raise EdgexError(
                f"{where} has metadata version {version}, newer than this edgex reads ({METADATA_VERSION}): "
                "upgrade edgex (pip install -U edgex)"
            )
        hints, named = _hints(cls), {f.name for f in fields(cls)} - {"version", "sections"}
        try:
            typed = {k: _typed(v, hints[k], k) for k, v in data.items() if k in named and v is not None}
        except _WrongType as exc:
            raise _unreadable(where, str(exc)) from None
        sections = {k: v for k, v in data.items() if k not in named and k not in ("version", "sections", *LEGACY_KEYS)}
        return cls(**typed, sections=sections)


NO_METADATA = ArtifactMetadata()  # what a model without a metadata file has


def read_metadata(artifact: str | os.PathLike, missing: ArtifactMetadata = NO_METADATA) -> ArtifactMetadata:
    """The metadata written next to an artifact, or ``missing`` when there is none."""
    path = metadata_path(artifact)
    if not path.is_file():
        return missing
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _unreadable(str(path), f"not valid JSON ({exc})") from exc
    return ArtifactMetadata.from_dict(data, str(path))


def write_metadata(artifact: str | os.PathLike, meta: ArtifactMetadata) -> Path:
    """Write ``meta`` next to ``artifact`` (atomically); returns the metadata file's path."""
    return write_json_atomic(metadata_path(artifact), meta.to_dict())


def _unreadable(where: str, why: str) -> EdgexError:
    return EdgexError(
        f"cannot read {where}: {why}; repair or delete that file (without it, edgex treats the model as one it "
        "did not make)"
    )


def _empty(value) -> bool:
    """Whether a field holds nothing (and is left out of the file)."""
    return value is None or (isinstance(value, (tuple, dict)) and not value)


def _plain(value):
    """A field's value as JSON data (records as objects, without their empty fields)."""
    if is_dataclass(value):
        return {k: v for k, v in asdict(value).items() if v is not None}
    return value


class _WrongType(ValueError):
    """A value in a metadata file that does not have its field's type."""


@cache
def _hints(cls) -> dict:
    from devices.base import TensorInfo  # numpy: only when a file is read

    return typing.get_type_hints(cls, localns={"TensorInfo": TensorInfo})


_EXPECTED = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", dict: "an object"}


def _typed(value, hint, key: str):
    """``value`` (parsed JSON) as the type ``hint`` of the field ``key``: JSON lists become tuples, objects become
    records; _WrongType when it does not fit."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # its own error says what is wrong inside
            return _typed(value, options[0], key)
        for option in options:
            try:
                return _typed(value, option, key)
            except _WrongType:
                continue
        raise _WrongType(f"{key} should be {' or '.join(_expected(a) for a in args)}, got {_shown(value)}")
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)) or (args[-1] is not Ellipsis and len(value) != len(args)):
            raise _WrongType(f"{key} should be {_expected(hint)}, got {_shown(value)}")
        each = [args[0]] * len(value) if args[-1] is Ellipsis else args
        return tuple(_typed(v, h, f"{key}[{i}]") for i, (v, h) in enumerate(zip(value, each)))
    if is_dataclass(hint) and isinstance(value, dict):
        return _record(hint, value, key)
    if hint is float and value is None:
        return math.nan  # NaN and infinities are written as null
    if hint in (int, float) and type(value) in (int, float) and (hint is float or type(value) is int):
        return hint(value)
    if hint in (str, bool, dict) and isinstance(value, hint):
        return value
    raise _WrongType(f"{key} should be {_expected(hint)}, got {_shown(value)}")


def _record(cls, data: dict, key: str):
    """A nested record (its fields typed; keys it does not know are ignored)."""
    hints = _hints(cls)
    values = {f.name: _typed(data[f.name], hints[f.name], f"{key}.{f.name}") for f in fields(cls) if f.name in data}
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in values]
    if missing:
        raise _WrongType(f"{key} lacks {', '.join(missing)}")
    try:
        return cls(**values)
    except EdgexError as exc:  # a record's own check (a preprocessing's channel order)
        raise _WrongType(f"{key}: {exc}") from None


def _expected(hint) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        return "a list" if Ellipsis in args else f"a list of {len(args)} items"
    return _EXPECTED.get(hint, "an object")


def _shown(value) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return {"list": "a list", "dict": "an object"}.get(text, text[:60])
