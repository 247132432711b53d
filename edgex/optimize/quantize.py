"""`edgex quantize`: post-training quantization and quantization-aware training, with the accuracy of the
float model and of the quantized artifact measured on the validation split through the artifact's runtime."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from converters.registry import CALIBRATION_SAMPLES, FORMATS, Parity, artifact_name
from devices.errors import EdgexError, choice_error
from devices.files import file_size, refuse_overwrite, write_json_atomic
from devices.metadata import read_metadata
from edgex.optimize.common import Setup, setup
from edgex.progress import Progress

MODES = {"dynamic": "dynamic", "float16": "fp16", "int8": "int8", "qat": "int8"}  # mode -> export precision
QUANTIZE_FORMATS = ("tflite", "onnx", "edgetpu")  # what `edgex quantize --to` writes
REPORT_FILE = "quantize_report.json"
AUTO_KEEP_LIMIT = 8  # layers --auto-keep-float may keep in float before giving up
LAYER_ERRORS_SHOWN = 15
DATA_NEEDED = {
    "int8": "--mode int8 needs data (calibration and accuracy)",
    "qat": "--mode qat needs data (fine-tuning, calibration and accuracy)",
}


@dataclass(frozen=True)
class QatResult:
    """The quantization-aware fine-tuning of a quantize run."""

    keras_model: str  # the QAT Keras model (HDF5)
    epochs: int
    lr: float
    history: dict
    seconds: float
    top1: float  # of the QAT Keras model


@dataclass(frozen=True)
class QuantizeReport:
    mode: str
    target: str
    model: str
    artifact: str
    float_top1: float
    quant_top1: float
    drop_points: float  # (float - quantized) top-1, in percentage points
    float_size_bytes: int  # the fp32 export in the same format
    quant_size_bytes: int
    compression: float  # float size / quantized size
    samples: int
    max_drop: float | None = None
    gate_passed: bool | None = None
    parity: Parity | None = None  # the export's check against its source (None after --auto-keep-float)
    qat: QatResult | None = None
    kept_float: tuple[str, ...] = ()
    auto_keep_float: tuple[dict, ...] = ()  # each step: layer kept, top-1, drop, size
    layer_errors: tuple[dict, ...] = ()  # worst per-layer quantization errors (--layer-errors)
    latency_ms: dict = field(default_factory=dict)  # p50 of full-int8 vs selectively quantized (auto-keep-float)
    float_artifact: str = ""
    notes: tuple[str, ...] = ()
    data: str = ""  # the data spec calibration, fine-tuning and accuracy used
    data_recorded: bool = False  # it came from the model's metadata (no --data)

    def to_json(self) -> dict:
        return asdict(self)


def _validate(mode: str, target: str, model: Path) -> None:
    if mode not in MODES:
        raise choice_error("mode", mode, MODES)
    if target not in QUANTIZE_FORMATS:
        raise choice_error("target", target, QUANTIZE_FORMATS)
    if target == "onnx" and mode in ("dynamic", "float16"):
        raise EdgexError(f"--mode {mode} is a TFLite quantization; for ONNX use --mode int8 or qat")
    if FORMATS[target].integer_only and MODES[mode] != "int8":
        raise EdgexError("the Edge TPU runs full-integer models only: use --mode int8 or qat")
    if not model.exists():
        raise EdgexError(f"model file not found: {model}")
    if mode == "qat" and model.suffix not in (".keras", ".h5"):
        raise EdgexError(f"--mode qat fine-tunes a Keras model; {model.name} is not a Keras file (.keras, .h5)")


def _validate_float_layers(mode, to, max_drop, keep_float, auto_keep_float) -> None:
    if max_drop is not None and max_drop < 0:
        raise EdgexError(f"--max-drop is in points of top-1 and must be >= 0, got {max_drop}")
    if auto_keep_float and (max_drop is None or to != "tflite" or mode != "int8"):
        raise EdgexError("--auto-keep-float needs --max-drop, --mode int8 and --to tflite")
    if keep_float and (to != "tflite" or mode != "int8"):
        raise EdgexError("--keep-float applies to --mode int8 --to tflite")


def quantize(
    model: str | Path,
    mode: str = "int8",
    *,
    data: str | None = None,
    to: str = "tflite",
    epochs: int = 2,
    max_drop: float | None = None,
    layer_errors: bool = False,
    keep_float: tuple[str, ...] = (),
    auto_keep_float: bool = False,
    out: str | Path | None = None,
    force: bool = False,
    calib_samples: int = CALIBRATION_SAMPLES,
    lr: float = 5e-6,
    auto_keep_limit: int = AUTO_KEEP_LIMIT,
    progress: Progress | None = None,
    preprocessing: str | None = None,
) -> QuantizeReport:
    """Quantize ``model`` and measure what it costs in accuracy; see QuantizeReport. ``layer_errors``: report the
    layers with the largest int8 quantization error."""
    model = Path(model)
    s, out_dir = _prepare(model, mode, to, data, out, force, max_drop, keep_float, auto_keep_float, preprocessing)
    float_top1, float_export = s.source_top1(), _export_float(s, model.stem, to, out_dir)
    qat, convert_source = None, s.source
    if mode == "qat":
        qat_path = out_dir / f"{model.stem}_qat.h5"
        qat, convert_source = _quantization_aware_training(s, qat_path, epochs, lr, calib_samples, progress)
    result = _export_quantized(s, convert_source, model.stem, mode, to, out_dir, keep_float, calib_samples)
    notes = list(result.notes)
    errors = _layer_errors(s, mode, to, calib_samples, layer_errors or auto_keep_float, layer_errors, notes)
    path = Path(result.path)
    q = _Quantized(artifact=path, top1=s.artifact_top1(path), parity=result.parity, kept=tuple(keep_float))
    if auto_keep_float and 100 * (float_top1 - q.top1) > max_drop:
        q = _auto_keep_float(s, errors, q.artifact, float_top1, max_drop, calib_samples, auto_keep_limit)
    report = _report(model, mode, to, s, q, float_top1, float_export, qat, errors, notes, max_drop)
    write_json_atomic(out_dir / REPORT_FILE, report.to_json())
    return report


def _report(model: Path, mode, to, s: Setup, q, float_top1, float_export, qat, errors, notes, max_drop):
    drop, quant_size = 100 * (float_top1 - q.top1), file_size(q.artifact)
    return QuantizeReport(
        mode=mode,
        target=to,
        model=str(model),
        artifact=str(q.artifact),
        float_top1=float_top1,
        quant_top1=q.top1,
        drop_points=drop,
        float_size_bytes=float_export.size_bytes,
        quant_size_bytes=quant_size,
        compression=float_export.size_bytes / quant_size if quant_size else float("nan"),
        samples=len(s.dataset.val),
        max_drop=max_drop,
        gate_passed=None if max_drop is None else drop <= max_drop,
        parity=q.parity,
        qat=qat,
        kept_float=q.kept,
        auto_keep_float=q.steps,
        layer_errors=tuple(asdict(e) for e in (errors or [])[:LAYER_ERRORS_SHOWN]),
        latency_ms=q.latency,
        float_artifact=float_export.path,
        notes=tuple(notes),
        data=s.data,
        data_recorded=s.data_recorded,
    )


def _export_float(s, stem: str, to: str, out_dir: Path):
    """The float model in the target's format (TFLite for the Edge TPU): the baseline for size and accuracy."""
    float_format = "tflite" if to == "edgetpu" else to
    return _export(s, s.source, float_format, "fp32", out_dir / artifact_name(stem, float_format, "fp32"))


@dataclass(frozen=True)
class _Quantized:
    """The quantized model a run ends with: the first export, or the one --auto-keep-float settled on."""

    artifact: Path
    top1: float
    parity: Parity | None
    kept: tuple[str, ...] = ()
    steps: tuple[dict, ...] = ()
    latency: dict = field(default_factory=dict)


def _prepare(
    model: Path, mode, to, data, out, force, max_drop, keep_float, auto_keep_float, preprocessing
) -> tuple[Setup, Path]:
    """Check the options, make the output folder, and load the model with its data."""
    _validate(mode, to, model)
    _validate_float_layers(mode, to, max_drop, keep_float, auto_keep_float)
    out_dir = Path(out) if out else model.parent / f"quantize_{mode}_{to}"
    refuse_overwrite(out_dir / REPORT_FILE, force)
    out_dir.mkdir(parents=True, exist_ok=True)
    s = setup(model, data, DATA_NEEDED.get(mode, "measuring accuracy needs data"), preprocessing)
    if auto_keep_float and s.source.kind != "keras":
        raise EdgexError(
            f"--auto-keep-float ranks the layers of a Keras model by their quantization error; {model.name} "
            "is a SavedModel: pass the .keras file, or name layers with --keep-float"
        )
    return s, out_dir


def _export_quantized(s: Setup, source, stem: str, mode: str, to: str, out_dir: Path, keep_float, calib_samples):
    route = "tflite" if (mode == "qat" and to == "onnx") else "qdq"
    stem = f"{stem}_{mode}" if to == "edgetpu" else stem
    options = {"keep_float": keep_float, "calib_samples": calib_samples, "onnx_int8_route": route}
    return _export(s, source, to, MODES[mode], out_dir / artifact_name(stem, to, mode), **options)


def _export(s: Setup, source, to: str, precision: str, out: Path, **options):
    from edgex.artifacts.convert import export_model

    return export_model(
        source.path, to, precision, data=s.data, out=out, force=True, source=source, dataset=s.dataset, **options
    )


def _latency_pair(first: Path, second: Path) -> tuple[float, float]:
    from edgex.optimize.common import latency_pair

    return latency_pair(first, second, warmup=3, runs=30, min_seconds=0.3)


def _layer_errors(s: Setup, mode: str, to: str, calib_samples: int, wanted: bool, asked: bool, notes: list):
    """Per-layer int8 errors of the float model (worst first), when asked for and available; None otherwise."""
    if wanted and to in ("tflite", "edgetpu") and s.source.kind == "keras":
        from converters.tflite import quantization_errors

        if mode == "qat" and asked:
            notes.append(
                "--layer-errors with --mode qat: the per-layer errors are those of post-training int8 of the float "
                "model, the starting point that QAT improves on"
            )
        return quantization_errors(s.source, s.calibration(calib_samples))
    if asked:
        notes.append("--layer-errors reports per-layer errors of TFLite int8 models of Keras sources")
    return None


def _quantization_aware_training(s: Setup, path: Path, epochs: int, lr: float, calib_samples: int, progress):
    """tfmot's quantize_model (SeparableConv2D split into depthwise + pointwise with fake-quant between), its
    activation ranges calibrated on ``calib_samples`` training images, then fine-tuning; the QAT Keras model is
    saved (as HDF5) and is the source of the int8 export."""
    from converters.source import source_from_keras
    from devices.tfkeras import tfmot as import_tfmot
    from edgex.optimize.common import calibrate_qat_ranges, save_qat_model
    from edgex.training.trainer import fine_tune

    start = time.perf_counter()
    qat_model = import_tfmot().quantization.keras.quantize_model(s.source.keras_model)
    calibrate_qat_ranges(qat_model, s.calibration(calib_samples))
    # A trained model only needs its weights nudged towards the int8 grid: a small learning rate, no augmentation.
    history = fine_tune(qat_model, s.dataset, epochs=epochs, lr=lr, augment=(), progress=progress)
    save_qat_model(qat_model, path, read_metadata(s.source.path).with_sections(qat=True, qat_history=history))
    seconds = time.perf_counter() - start
    result = QatResult(
        keras_model=str(path), epochs=epochs, lr=lr, history=history, seconds=seconds, top1=s.keras_top1(qat_model)
    )
    return result, source_from_keras(qat_model, path)


def _auto_keep_float(s: Setup, errors, artifact: Path, float_top1, max_drop, calib_samples, limit) -> _Quantized:
    """Keep the worst layers in float, one at a time, until the drop is within ``max_drop``; time the result
    against the full-int8 model."""
    worst = []
    for error in errors:
        if error.layer and error.layer not in worst:
            worst.append(error.layer)
    steps, kept = [], []
    path, top1 = artifact, None
    for layer in worst[:limit]:
        kept.append(layer)
        path = artifact.with_name(f"{artifact.stem}_keep{len(kept)}.tflite")
        _export(s, s.source, "tflite", "int8", path, keep_float=tuple(kept), calib_samples=calib_samples)
        top1 = s.artifact_top1(path)
        drop = 100 * (float_top1 - top1)
        steps.append(
            {"kept": layer, "artifact": str(path), "top1": top1, "drop_points": drop, "size_bytes": file_size(path)}
        )
        if drop <= max_drop:
            break
    full_int8_p50, selective_p50 = _latency_pair(artifact, path)
    latency = {"full_int8_p50": full_int8_p50, "selective_p50": selective_p50}
    return _Quantized(artifact=path, top1=top1, parity=None, kept=tuple(kept), steps=tuple(steps), latency=latency)
