"""The table of target formats and the one ``convert`` function that writes, checks and describes an export."""

from __future__ import annotations

import importlib
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from converters.parity import Parity, sequential_parity
from converters.source import SourceModel, load_source, reference_outputs
from devices.errors import EdgexError, choice_error
from devices.files import atomic_path, file_size, metadata_path, refuse_overwrite, utc_now
from devices.metadata import (
    ArtifactMetadata,
    CalibrationRecord,
    ConversionTiming,
    QuantizationRecord,
    SourceRecord,
    write_metadata,
)

if TYPE_CHECKING:
    import numpy as np

MIN_CALIBRATION_SAMPLES = 100  # fewer gives a warning
SMALL_MODEL_BYTES = 32 * 2**20  # sources up to this size are checked on every planned parity sample


@dataclass(frozen=True)
class Target:
    """A format edgex exports to, with what sets it apart: code reads these fields, not the format's name."""

    name: str
    module: str  # converters.<module> with export(source, path, options) -> ExportInfo
    precisions: tuple[str, ...]
    suffix: str  # "" for folders
    runtime: str  # the runtime that runs the result (for the parity check)
    file_name: str = "{stem}_{precision}{suffix}"  # the artifact's name beside its source model
    default_precision: str = "fp32"
    default_io: str = "float"  # the input/output type when none is asked for
    integer_io: bool = False  # full-integer models may take and give int8 or uint8 (--io)
    static_batch: bool = False  # the runtime needs a fixed batch of 1
    compiled_twin: bool = False  # the exporter may also write a compiled model (compiled_path) with its metadata

    @property
    def integer_only(self) -> bool:
        """Whether the format holds full-integer models only (each needs calibration data)."""
        return self.precisions == ("int8",)


FORMATS: dict[str, Target] = {
    "tflite": Target(
        name="tflite",
        module="converters.tflite",
        precisions=("fp32", "fp16", "dynamic", "int8"),
        suffix=".tflite",
        runtime="litert",
        integer_io=True,
    ),
    "onnx": Target(
        name="onnx", module="converters.onnx", precisions=("fp32", "int8"), suffix=".onnx", runtime="onnxruntime"
    ),
    "saved-model": Target(
        name="saved-model",
        module="converters.saved_model",
        precisions=("fp32",),
        suffix="",
        runtime="tensorflow",
        file_name="{stem}_saved_model",
    ),
    # A full-integer TFLite model that meets the Edge TPU's constraints; edgetpu_compiler, when installed, turns
    # x_quant.tflite into x_quant_edgetpu.tflite (Coral's naming).
    "edgetpu": Target(
        name="edgetpu",
        module="converters.edgetpu",
        precisions=("int8",),
        suffix=".tflite",
        runtime="litert",
        file_name="{stem}_quant.tflite",
        default_precision="int8",
        default_io="uint8",
        integer_io=True,
        static_batch=True,
        compiled_twin=True,
    ),
}
IO_TYPES = ("float", "int8", "uint8")
BATCHES = ("1", "dynamic")
ONNX_INT8_ROUTES = ("qdq", "tflite")
# Preprocessed training images whose activation ranges int8 calibration records (TFLite's own guide uses 100). On a
# trained mini, 25 to 200 give the same int8 top-1 within one validation image; at 299 px each costs 0.4 s of the
# calibrator's single-threaded float run.
CALIBRATION_SAMPLES = 100


@dataclass(frozen=True)
class ExportOptions:
    precision: str = "fp32"
    io: str = "float"  # input/output type of full-integer models
    batch: str = "1"  # "1" or "dynamic"
    opset: int = 17
    calibration: np.ndarray | None = None  # preprocessed float32 samples for int8
    keep_float: tuple[str, ...] = ()  # layers left in float in int8 TFLite models
    onnx_int8_route: str = "qdq"  # qdq: ONNX Runtime static QDQ; tflite: int8 TFLite then tf2onnx.from_tflite
    onnx_writer: str = "auto"  # fp32 ONNX graph: tf2onnx, direct (edgex's writer), auto (direct for large models)
    final_name: str = ""  # the artifact's final file name (external data files are named after it)
    # TFLite: write the serving SignatureDef (the converter goes through a SavedModel for it, which takes 2-3x
    # longer); models made only to be timed, such as the sweep's one-layer models, do without.
    signature: bool = True

    @property
    def batch_size(self) -> int | None:
        return 1 if self.batch == "1" else None

    @property
    def calibration_digest(self) -> str:
        """SHA-256 of the calibration samples (their values decide an int8 model's scales)."""
        import hashlib

        import numpy as np

        if self.calibration is None:
            return ""
        samples = np.ascontiguousarray(self.calibration, np.float32)
        return hashlib.sha256(str(samples.shape).encode() + samples.tobytes()).hexdigest()


@dataclass(frozen=True)
class ExportInfo:
    """What an exporter reports besides the file itself."""

    notes: tuple[str, ...] = ()
    details: dict = field(default_factory=dict)  # format-specific: opset, quantization route, Edge TPU report...


@dataclass(frozen=True)
class ConversionResult:
    path: str
    target: str
    precision: str
    size_bytes: int
    source_size_bytes: int
    seconds: float
    parity: Parity
    metadata_path: str
    notes: tuple[str, ...] = ()
    details: dict = field(default_factory=dict)

    @property
    def size_ratio(self) -> float:
        return self.size_bytes / self.source_size_bytes if self.source_size_bytes else float("nan")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["size_ratio"] = self.size_ratio
        return data


def target_of(to: str) -> Target:
    """The row of format ``to``; an error listing the formats for any other name."""
    if to not in FORMATS:
        raise choice_error("format", to, FORMATS)
    return FORMATS[to]


def default_precision(to: str) -> str:
    """The precision a format is exported at unless told: fp32, or int8 for the Edge TPU (full-integer only)."""
    return target_of(to).default_precision


def artifact_name(stem: str, to: str, precision: str) -> str:
    """The file name of an export: ``model`` -> ``model_int8.tflite``, ``model_fp32.onnx``, ``model_saved_model``,
    ``model_quant.tflite`` (the one naming rule of convert, quantize, prune and the pipeline's run folder)."""
    target = FORMATS[to]
    return target.file_name.format(stem=stem, precision=precision, suffix=target.suffix)


def runtime_for_format(fmt: str) -> str:
    """The runtime that runs a file of format ``fmt`` (``keras`` included: TensorFlow)."""
    return "tensorflow" if fmt == "keras" else FORMATS[fmt].runtime


def format_for_runtime(runtime: str) -> str:
    """The format a runtime's models are exported to: litert -> tflite, onnxruntime -> onnx."""
    return next(name for name, target in FORMATS.items() if target.runtime == runtime)


def default_output(model: str | Path, to: str, precision: str) -> Path:
    """``model.keras`` -> ``model_int8.tflite``, ``model_fp32.onnx``, ``model_saved_model/``, ``model_quant.tflite``."""
    model = Path(model)
    return model.with_name(artifact_name(model.stem if model.is_file() else model.name, to, precision))


def _validate(target: Target, precision: str, io: str, batch: str, opset: int, route: str, writer: str) -> None:
    to = target.name
    if precision not in target.precisions:
        raise EdgexError(
            f"precision {precision!r} is not available for {to}; choose one of: {', '.join(target.precisions)}"
        )
    if io not in IO_TYPES:
        raise choice_error("input/output type", io, IO_TYPES)
    if io != "float" and not (precision == "int8" and target.integer_io):
        raise EdgexError(f"--io {io} applies to full-integer TFLite models (--precision int8), not {to} {precision}")
    if batch not in BATCHES:
        raise choice_error("batch", batch, BATCHES)
    if target.static_batch and batch != "1":
        raise EdgexError(f"{to} needs static shapes: --batch 1")
    if not 9 <= int(opset) <= 21:
        raise EdgexError(f"ONNX opset must be between 9 and 21, got {opset}")
    if route not in ONNX_INT8_ROUTES:
        raise choice_error("ONNX int8 route", route, ONNX_INT8_ROUTES)
    if to == "onnx" and precision == "int8" and int(opset) < 13:
        raise EdgexError(
            f"ONNX int8 needs opset 13 or later (per-channel QuantizeLinear/DequantizeLinear), got --opset {opset}"
        )
    if writer not in ("auto", "tf2onnx", "direct"):
        raise choice_error("ONNX writer", writer, ("auto", "tf2onnx", "direct"))


def convert(
    model: str | Path | SourceModel,
    to: str,
    precision: str | None = None,
    *,
    out: str | Path | None = None,
    force: bool = False,
    calibration: np.ndarray | None = None,
    parity_inputs: np.ndarray | None = None,
    parity_samples: int | None = None,
    io: str | None = None,
    batch: str = "1",
    opset: int = 17,
    keep_float: tuple[str, ...] = (),
    onnx_int8_route: str = "qdq",
    onnx_writer: str = "auto",
    signature: bool = True,
    data_name: str | None = None,
    notes: tuple[str, ...] = (),
    threads: int | None = None,
) -> ConversionResult:
    """Export ``model`` to ``to`` at ``precision``, run the file in its runtime and compare it with the original.

    ``calibration``: preprocessed float32 samples for int8 (required). ``parity_inputs``: preprocessed samples
    for the parity check (random inputs when None); ``parity_samples``: check exactly this many of them (default:
    stop once the verdict is decided at 95% confidence; sources under ``SMALL_MODEL_BYTES`` use them all).
    ``signature``: TFLite files carry the serving SignatureDef (leave it on for anything deployed). ``data_name``:
    the data set of those samples (for the metadata); ``notes``: remarks of the caller, reported with the
    converter's own. ``threads``: the runtime's threads for the parity check (default: every core).
    """
    target = target_of(to)
    precision = precision or target.default_precision
    io = io or target.default_io
    _validate(target, precision, io, batch, opset, onnx_int8_route, onnx_writer)
    out = _prepare_output(model, target, precision, out, force)
    notes = [*notes, *_calibration_notes(precision, calibration)]
    source, loading = _timed(lambda: model if isinstance(model, SourceModel) else load_source(model))
    options = ExportOptions(
        precision=precision,
        io=io,
        batch=batch,
        opset=int(opset),
        calibration=None if calibration is None else _float32(calibration),
        keep_float=tuple(keep_float),
        onnx_int8_route=onnx_int8_route,
        onnx_writer=onnx_writer,
        final_name=out.name,
        signature=signature,
    )
    info, seconds = _timed(_export, source, target, out, options)
    (parity, quantization, check_notes), checking = _timed(
        _check_export, source, target, out, precision, parity_inputs, parity_samples, threads
    )
    timing = ConversionTiming(loading_s=loading, conversion_s=seconds, parity_s=checking)
    notes = (*notes, *info.notes, *check_notes)
    meta = _metadata(
        source, target, options, info, data_name, parity=parity, quantization=quantization, notes=notes, timing=timing
    )
    return _record(source, target, out, meta, info, seconds)


def _timed(fn, *args):
    """fn(*args) and the seconds it took."""
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def _export(source: SourceModel, target: Target, out: Path, options: ExportOptions) -> ExportInfo:
    with atomic_path(out, overwrite=True, is_dir=not target.suffix) as tmp:
        return importlib.import_module(target.module).export(source, tmp, options)


def _record(source: SourceModel, target: Target, out: Path, meta: ArtifactMetadata, info: ExportInfo, seconds: float):
    """Write the artifact's metadata (and its compiled twin's, when the exporter made one); describe the result."""
    meta_path = write_metadata(out, meta)
    compiled = compiled_path(out)
    if target.compiled_twin and compiled.is_file():  # it has the same classes, preprocessing and scales
        write_metadata(compiled, replace(meta, compiled_from=out.name))
    return ConversionResult(
        path=str(out),
        target=meta.format,
        precision=meta.precision,
        size_bytes=file_size(out),
        source_size_bytes=file_size(source.path) if source.path.exists() else 0,  # in-memory sources have no file
        seconds=seconds,
        parity=meta.parity,
        metadata_path=str(meta_path),
        notes=meta.notes,
        details=dict(info.details),
    )


def _float32(samples) -> np.ndarray:
    import numpy as np

    return np.asarray(samples, np.float32)


def _prepare_output(model, target: Target, precision: str, out, force: bool) -> Path:
    """The artifact's path, refusing to overwrite it (and, for the Edge TPU, its compiled form) without ``force``."""
    source_path = Path(model.path if isinstance(model, SourceModel) else model)
    out = Path(out) if out else default_output(source_path, target.name, precision)
    refuse_overwrite(out, force)
    if target.compiled_twin:
        # A compiled model left from an earlier export would no longer match the new one (deploy ships it).
        compiled = compiled_path(out)
        refuse_overwrite(compiled, force)
        compiled.unlink(missing_ok=True)
        metadata_path(compiled).unlink(missing_ok=True)
    if target.suffix and out.suffix != target.suffix:
        raise EdgexError(f"output {out} should end in {target.suffix} for {target.name}")
    return out


def _calibration_notes(precision: str, calibration) -> list[str]:
    if precision != "int8":
        return []
    if calibration is None or len(calibration) == 0:
        raise EdgexError("int8 quantization needs calibration data: pass --data digits, an image folder or tfds:NAME")
    if len(calibration) < MIN_CALIBRATION_SAMPLES:
        return [
            f"only {len(calibration)} calibration samples (fewer than {MIN_CALIBRATION_SAMPLES}): "
            "activation ranges may be poorly estimated"
        ]
    return []


def _check_export(source, target: Target, out: Path, precision: str, inputs, samples: int | None, threads):
    """(parity, input/output quantization, notes): the file run in its own runtime, loaded once, against the
    source's outputs (kept for the same samples across formats). An Edge TPU model is checked on the CPU."""
    import numpy as np

    import devices
    from devices.sysinfo import int8_dot_products_saturate, usable_cores

    notes, kind = [], "data"
    if inputs is None or len(inputs) == 0:
        kind = "random"
        inputs = np.random.default_rng(0).uniform(-1, 1, (32, *source.input_shape)).astype(np.float32)
        notes.append("parity checked on random inputs; pass --data for real samples")
    if samples is not None and samples < 1:
        raise EdgexError(f"--parity-samples must be at least 1, got {samples}")
    x = _float32(inputs)[:samples]
    full = samples is not None or kind == "random" or _small(source)
    with devices.load_model(out, runtime=target.runtime, device="cpu", threads=threads or usable_cores()) as model:
        quantization = QuantizationRecord(inputs=tuple(model.inputs), outputs=tuple(model.outputs))
        done: list[np.ndarray] = []

        def exported(n: int) -> np.ndarray:
            have = sum(len(chunk) for chunk in done)
            if have < n:
                done.append(model.predict(x[have:n]))
            return np.concatenate(done)[:n]

        parity = sequential_parity(reference_outputs(source, x), exported, precision, kind, len(x), full=full)
        if model.batch_note:
            notes.append(model.batch_note)
    notes += list(parity.notes)
    if not parity.passed:
        notes.append(
            f"parity check FAILED: {parity.criterion} not met (max abs diff {parity.max_abs_diff:.3g}, "
            f"top-1 agreement {parity.describe_agreement()})"
        )
        if target.name == "onnx" and precision == "int8" and int8_dot_products_saturate():
            notes.append(
                "this CPU has no VNNI: ONNX Runtime's x86 int8 kernels saturate with 8-bit weights "
                "(the default qdq route quantizes weights to 7 bits to avoid it)"
            )
    return parity, quantization, notes


def _small(source: SourceModel) -> bool:
    """Whether checking the source on every sample costs little (its file is under ``SMALL_MODEL_BYTES``)."""
    return not source.path.exists() or file_size(source.path) <= SMALL_MODEL_BYTES


def _metadata(
    source: SourceModel,
    target: Target,
    options: ExportOptions,
    info: ExportInfo,
    data_name: str | None,
    *,
    parity: Parity,
    quantization: QuantizationRecord,
    notes: tuple[str, ...],
    timing: ConversionTiming,
) -> ArtifactMetadata:
    """An export's metadata: what its source records (classes, preprocessing, data), how it was made and checked,
    and the exporter's own details (opset, the Edge TPU report ...)."""
    from devices.sysinfo import versions

    recorded = source.metadata
    classes = quantization.outputs[0].shape[-1] if quantization.outputs else 0
    calibrated = options.precision == "int8" and options.calibration is not None
    return ArtifactMetadata(
        format=target.name,
        precision=options.precision,
        io=options.io,
        batch=options.batch,
        created=utc_now(),
        input_shape=tuple(source.input_shape),
        class_names=recorded.class_names_or_indices(classes),
        preprocessing=recorded.input_preprocessing,
        source=SourceRecord(path=str(source.path), sha256=source.sha256, kind=source.kind),
        dataset=recorded.dataset,
        model_config=recorded.model_config,
        parity=parity,
        quantization=quantization,
        calibration=CalibrationRecord(samples=len(options.calibration), data=data_name) if calibrated else None,
        timing=timing,
        notes=notes,
        versions=versions(),
        sections={**info.details, **({"parity_data": data_name} if data_name and parity.inputs == "data" else {})},
    )


def compiled_path(path: Path) -> Path:
    """Where edgetpu_compiler puts the compiled form of ``x_quant.tflite``: ``x_quant_edgetpu.tflite``."""
    return Path(path).with_name(f"{Path(path).stem}_edgetpu.tflite")
