"""The model being converted: a Keras file or a SavedModel folder, with its metadata and a reference runtime."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from devices.errors import ModelFileError, first_line
from devices.files import read_whole, sha256_file
from devices.memo import forget_outputs, kept_outputs, sample_digest
from devices.metadata import NO_METADATA, ArtifactMetadata, read_metadata

if TYPE_CHECKING:
    import numpy as np


@dataclass
class SourceModel:
    path: Path
    kind: str  # "keras" or "saved_model"
    keras_model: object | None  # tf_keras model for Keras files
    input_shape: tuple[int, ...]  # without the batch dimension
    metadata: ArtifactMetadata = NO_METADATA
    sha256: str = ""
    _reference: object | None = None

    def reference(self):
        """The source in the TensorFlow backend of ``devices``: what every export is compared against."""
        if self._reference is None:
            from devices.tensorflow import TensorFlowModel

            self._reference = TensorFlowModel(self.path, model=self.keras_model)
        return self._reference

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.reference().predict(x)

    def concrete_function(self, batch: int | None):
        """A concrete TF function of the model with a fixed (or dynamic, None) batch dimension."""
        from devices.tfkeras import tensorflow

        tf = tensorflow()
        spec = tf.TensorSpec([batch, *self.input_shape], tf.float32, name="input")
        if self.kind == "keras":
            model = self.keras_model
            fn = tf.function(lambda x: model(x, training=False))
            return fn.get_concrete_function(spec)
        loaded = tf.saved_model.load(str(self.path))
        signature = loaded.signatures["serving_default"]
        name = sorted(signature.structured_input_signature[1])[0]
        outputs = sorted(signature.structured_outputs)
        fn = tf.function(lambda x: next(signature(**{name: x})[o] for o in outputs))
        concrete = fn.get_concrete_function(spec)
        concrete._edgex_keepalive = loaded  # the function references variables owned by ``loaded``
        return concrete


def source_from_keras(model, path: str | Path, metadata: ArtifactMetadata | None = None) -> SourceModel:
    """A SourceModel for an in-memory Keras model, saved at ``path`` or (when ``path`` does not exist) never saved:
    the one-layer models of the sweep are converted straight from memory. A model given with an existing ``path``
    must be the one saved there: its conversions are identified by that file's content."""
    path = Path(path)
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    saved = path.exists()
    if metadata is None:
        metadata = read_metadata(path) if saved else NO_METADATA
    sha256 = sha256_file(path) if saved else ""
    return SourceModel(path=path, kind="keras", keras_model=model, input_shape=shape, metadata=metadata, sha256=sha256)


def load_source(path: str | Path) -> SourceModel:
    """Load a model to convert; one-line errors for missing, corrupt or non-model files. A file loaded earlier in
    this process with the same content is not loaded again (several exports of one model load it once)."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    import json

    with read_whole(path):  # the model loaded is the content hashed, or FileChanged
        key = (str(path.resolve()), sha256_file(path), json.dumps(read_metadata(path).to_dict(), sort_keys=True))
        if key in _SOURCES:
            _SOURCES.move_to_end(key)
            return _SOURCES[key]
        source = _load_source(path, key[1])
    _SOURCES[key] = source
    while len(_SOURCES) > SOURCES_KEPT:
        _SOURCES.popitem(last=False)
    return source


def _load_source(path: Path, sha256: str) -> SourceModel:
    from devices.tensorflow import is_saved_model, load_keras_model

    meta = read_metadata(path)
    if is_saved_model(path):
        from devices.tfkeras import tensorflow

        tf = tensorflow()
        try:
            loaded = tf.saved_model.load(str(path))
            signature = loaded.signatures["serving_default"]
        except Exception as exc:
            raise ModelFileError(f"cannot load SavedModel {path}: {first_line(exc, 200)}") from exc
        specs = signature.structured_input_signature[1]
        if len(specs) != 1:
            raise ModelFileError(f"{path}: edgex converts single-input image models; this one has {len(specs)} inputs")
        shape = tuple(int(d) for d in next(iter(specs.values())).shape[1:])
        return SourceModel(
            path=path, kind="saved_model", keras_model=None, input_shape=shape, metadata=meta, sha256=sha256
        )
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder but not a SavedModel (no saved_model.pb)")
    model = load_keras_model(path)
    if len(model.inputs) != 1:
        raise ModelFileError(
            f"{path}: edgex converts single-input image models; this one has {len(model.inputs)} inputs"
        )
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ModelFileError(
            f"{path}: the input shape {tuple(model.inputs[0].shape)} is not fixed; "
            "rebuild the model with a fixed input size"
        )
    shape = tuple(int(d) for d in shape)
    return SourceModel(path=path, kind="keras", keras_model=model, input_shape=shape, metadata=meta, sha256=sha256)


# Conversions made in this process, by the content of the source file and every option that shapes the result.
# The pipeline converts one model for several stages (quantize's float reference, convert, prune's dense baseline,
# compare), and the ONNX int8 route starts from the same fp32 graph as the fp32 export.
_CONVERTED: OrderedDict[tuple, bytes] = OrderedDict()
CONVERTED_MAX_BYTES = 1 << 30  # all kept conversions together; one conversion is kept up to a quarter of it


def reuses_conversions(source: SourceModel) -> bool:
    """Whether conversions of ``source`` are kept: sources without a file (the sweep's one-layer models) are not."""
    return bool(source.sha256)


def converted_once(source: SourceModel, key: tuple, convert: Callable[[], bytes]) -> bytes:
    """``convert()``, or the bytes it gave for the same source file and ``key`` earlier in this process. Empty
    bytes from ``convert()`` mean "not worth keeping"."""
    if not reuses_conversions(source):
        return convert()
    full_key = (source.sha256, *key)
    if full_key in _CONVERTED:
        _CONVERTED.move_to_end(full_key)
        return _CONVERTED[full_key]
    data = convert()
    if 0 < len(data) <= CONVERTED_MAX_BYTES // 4:
        _CONVERTED[full_key] = data
        total = sum(len(kept) for kept in _CONVERTED.values())
        while total > CONVERTED_MAX_BYTES:
            total -= len(_CONVERTED.popitem(last=False)[1])
    return data


def forget_conversions() -> None:
    """Drop the conversions, loaded sources and reference outputs kept in this process (their memory, or to time
    them again)."""
    _CONVERTED.clear()
    _SOURCES.clear()
    _REFERENCES.clear()
    forget_outputs()


_SOURCES: OrderedDict[tuple, SourceModel] = OrderedDict()  # by path and content
SOURCES_KEPT = 2
# What the source gives on a data set (its accuracy), by the source file's content and what identifies the data.
_REFERENCES: OrderedDict[tuple, object] = OrderedDict()
REFERENCES_KEPT = 64


def remembered(source: SourceModel, key: tuple, compute: Callable[[], object]) -> object:
    """``compute()``, or what it gave for the same source content and ``key`` earlier in this process."""
    if not reuses_conversions(source):
        return compute()
    full_key = (source.sha256, *key)
    if full_key not in _REFERENCES:
        _REFERENCES[full_key] = compute()
        while len(_REFERENCES) > REFERENCES_KEPT:
            _REFERENCES.popitem(last=False)
    _REFERENCES.move_to_end(full_key)
    return _REFERENCES[full_key]


def source_outputs(
    source: SourceModel, x: np.ndarray, digests: list[bytes] | None = None, *, stored: bool = True
) -> np.ndarray:
    """The source's outputs on ``x``; samples seen before (same source content, same values) in this process,
    or by an earlier command (converters.output_store; ``stored=False``: not those), are not run again: the parity
    samples of every export, and the validation split behind the float accuracy (a superset of them)."""
    import numpy as np

    if not reuses_conversions(source):
        return np.asarray(source.predict(x))
    from converters.output_store import stored_outputs
    from devices.tensorflow import runtime_version

    if not stored:
        return kept_outputs(("source", source.sha256), x, source.predict, digests)
    key = f"{source.sha256}-{runtime_version().replace(' ', '-')}"
    return kept_outputs(("source", source.sha256), x, lambda rows: stored_outputs(key, rows, source.predict), digests)


def reference_outputs(source: SourceModel, x: np.ndarray) -> Callable[[int], np.ndarray]:
    """``upto(n)``: the source's outputs on the first ``n`` of ``x`` (what every format's parity check compares
    with), computed as far as asked and kept for the same source content and samples."""
    digests: list[bytes] = []

    def upto(n: int) -> np.ndarray:
        digests.extend(sample_digest(sample) for sample in x[len(digests) : n])
        return source_outputs(source, x[:n], digests[:n])

    return upto
