"""`edgex convert` as a library function: pick data for calibration and the parity check, then convert."""

from __future__ import annotations

from pathlib import Path

from converters.registry import CALIBRATION_SAMPLES, FORMATS
from devices.errors import EdgexError, choice_error
from devices.files import refuse_overwrite
from edgex.artifacts.accuracy import (
    data_spec,
    dataset_ahead,
    dataset_for,
    image_side,
    loaded_ahead,
    required_data_spec,
)


def with_preprocessing(source, name: str | None):
    """The source with ``--preprocessing`` recorded in its metadata (so calibration, parity and the converted
    model's metadata all use it); unchanged when ``name`` is None."""
    if not name:
        return source
    from dataclasses import replace

    from devices.preprocess import preprocessing_named

    return replace(source, metadata=replace(source.metadata, preprocessing=preprocessing_named(name)))


def export_model(
    model: str | Path,
    to: str,
    precision: str | None = None,
    *,
    data: str | None = None,
    calib_samples: int = CALIBRATION_SAMPLES,
    parity_samples: int | None = None,
    io: str | None = None,
    opset: int = 17,
    batch: str = "1",
    out: str | Path | None = None,
    force: bool = False,
    keep_float: tuple[str, ...] = (),
    onnx_int8_route: str = "qdq",
    source=None,
    dataset=None,
    preprocessing: str | None = None,
):
    """Convert a Keras file or SavedModel, calibrating int8 on real samples of ``data`` and checking parity on
    its validation split (``data`` defaults to the dataset recorded in the model's metadata, for parity only).
    ``parity_samples``: check exactly this many (default: up to ``DEFAULT_PARITY_SAMPLES``, stopping once the
    verdict is decided at 95% confidence; see converters.parity)."""
    from converters import convert, load_source

    precision = _checked_precision(to, precision, calib_samples, parity_samples)
    needs_calibration = precision == "int8" or FORMATS[to].integer_only
    recorded = ()
    if needs_calibration and not data and dataset is None:
        data, recorded = _recorded_data(model, source)
    if out is not None:
        refuse_overwrite(out, force)
    ahead = dataset_ahead(model, data) if source is None and dataset is None else None
    source = with_preprocessing(source or load_source(model), preprocessing)
    preprocessing = source.metadata.input_preprocessing
    spec = data_spec(source.metadata, data)
    dataset, calibration, parity_inputs = _sample_inputs(
        source, spec, dataset, ahead, preprocessing, calib_samples if needs_calibration else 0, parity_samples
    )
    notes = (*recorded, *_provenance_notes(source, dataset))
    return convert(
        source,
        to,
        precision,
        out=out,
        force=force,
        calibration=calibration,
        parity_inputs=parity_inputs,
        parity_samples=parity_samples,
        io=io,
        batch=batch,
        opset=opset,
        keep_float=tuple(keep_float),
        onnx_int8_route=onnx_int8_route,
        data_name=dataset.name if dataset is not None else None,
        notes=notes,
    )


def _recorded_data(model, source) -> tuple[str, tuple[str, ...]]:
    """The data a model's metadata records it was trained on, for int8 calibration without ``--data``, and the note
    that says so."""
    from devices.metadata import read_metadata

    meta = source.metadata if source is not None else read_metadata(model)
    spec = required_data_spec(meta, None, "int8 quantization needs calibration data", Path(model).name)
    return spec, (
        f"calibrated on {spec}, the data the model's metadata records it was trained on (--data: other data)",
    )


def _checked_precision(to: str, precision: str | None, calib_samples: int, parity_samples: int | None) -> str:
    """The precision to export at (the format's default when None), once the format and sample counts are valid."""
    from converters import default_precision

    if to not in FORMATS:  # fail before loading anything
        raise choice_error("format", to, FORMATS)
    precision = precision or default_precision(to)
    if calib_samples < 1:
        raise EdgexError(f"--calib-samples must be at least 1, got {calib_samples}")
    if parity_samples is not None and parity_samples < 1:
        raise EdgexError(f"--parity-samples must be at least 1, got {parity_samples}")
    return precision


def _sample_inputs(source, spec: str | None, dataset, ahead, preprocessing, calib_samples: int, parity_samples):
    """(dataset, calibration inputs or None when calib_samples is 0, parity inputs), prepared as the model expects;
    all None without data. ``ahead``: the dataset being loaded ahead (edgex.artifacts.accuracy.dataset_ahead)."""
    from converters.parity import DEFAULT_PARITY_SAMPLES

    if not spec and dataset is None:
        return None, None, None
    size = image_side(source.input_shape)
    dataset = dataset or loaded_ahead(ahead, size)
    if size is None:
        raise EdgexError(
            f"the model's input {source.input_shape} is not a square RGB image; edgex calibrates "
            "and checks image classifiers"
        )
    dataset = dataset or dataset_for(source.metadata, spec, size)
    calibration = None
    if calib_samples:
        images, _ = dataset.train.take(calib_samples, seed=0).arrays()
        calibration = preprocessing.apply(images)
    images, _ = dataset.val.take(parity_samples or DEFAULT_PARITY_SAMPLES, seed=0).arrays()
    return dataset, calibration, preprocessing.apply(images)


def _provenance_notes(source, dataset) -> tuple[str, ...]:
    """A note when the samples were prepared with a preprocessing the model's metadata does not record."""
    if dataset is None or source.metadata.preprocessing is not None:
        return ()
    return (
        f"{Path(source.path).name} has no edgex metadata: its inputs were prepared with Xception's "
        "preprocessing (pixels scaled to [-1, 1]); for a model trained otherwise, calibration and the "
        "parity check are wrong (pass --preprocessing to say how)",
    )
