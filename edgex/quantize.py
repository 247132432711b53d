"""`edgex quantize`: post-training quantization and quantization-aware training, with the accuracy of the
float model and of the quantized artifact measured on the validation split through the artifact's runtime."""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devices.errors import EdgexError, choice_error
from devices.files import atomic_path, file_size, refuse_overwrite, write_json_atomic

MODES = {"dynamic": "dynamic", "float16": "fp16", "int8": "int8", "qat": "int8"}  # mode -> export precision
TARGETS = ("tflite", "onnx", "edgetpu")
REPORT_FILE = "quantize_report.json"
AUTO_KEEP_LIMIT = 8  # layers --auto-keep-float may keep in float before giving up


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
    parity: dict = field(default_factory=dict)
    qat: dict = field(default_factory=dict)  # QAT Keras model, its accuracy, training history
    kept_float: tuple[str, ...] = ()
    auto_keep_float: tuple[dict, ...] = ()  # each step: layer kept, top-1, drop, size
    debug_layers: tuple[dict, ...] = ()  # worst per-layer quantization errors (--debug)
    latency_ms: dict = field(default_factory=dict)  # p50 of full-int8 vs selectively quantized (auto-keep-float)
    float_artifact: str = ""
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


def _validate(mode: str, target: str, data: str | None, model: Path) -> None:
    if mode not in MODES:
        raise choice_error("mode", mode, MODES)
    if target not in TARGETS:
        raise choice_error("target", target, TARGETS)
    if target == "onnx" and mode in ("dynamic", "float16"):
        raise EdgexError(f"--mode {mode} is a TFLite quantization; for ONNX use --mode int8 or qat")
    if target == "edgetpu" and mode not in ("int8", "qat"):
        raise EdgexError("the Edge TPU runs full-integer models only: use --mode int8 or qat")
    if mode in ("int8", "qat") and not data:
        raise EdgexError(
            f"--mode {mode} needs data (calibration and fine-tuning): pass --data digits, an image folder or tfds:NAME"
        )
    if not model.exists():
        raise EdgexError(f"model file not found: {model}")
    if mode == "qat" and model.suffix not in (".keras", ".h5"):
        raise EdgexError(f"--mode qat fine-tunes a Keras model; {model.name} is not a Keras file (.keras, .h5)")


def keras_accuracy(keras_model, dataset, preprocessing, class_names) -> float:
    """Top-1 of an in-memory Keras model through the TensorFlow backend of ``devices``."""
    from devices.evaluate import evaluate
    from devices.tensorflow import from_keras

    return evaluate(from_keras(keras_model), dataset.val.batches(128), preprocessing, class_names).top1


def artifact_accuracy(path: str | Path, dataset, preprocessing, class_names) -> float:
    import devices
    from devices.evaluate import evaluate

    with devices.load_model(path) as model:
        return evaluate(model, dataset.val.batches(64), preprocessing, class_names).top1


def quantize(
    model: str | Path,
    mode: str = "int8",
    *,
    data: str | None = None,
    to: str = "tflite",
    epochs: int = 2,
    max_drop: float | None = None,
    debug: bool = False,
    keep_float: tuple[str, ...] = (),
    auto_keep_float: bool = False,
    out: str | Path | None = None,
    force: bool = False,
    calib_samples: int = 200,
    lr: float = 5e-6,
    auto_keep_limit: int = AUTO_KEEP_LIMIT,
    progress=None,
    preprocessing: str | None = None,
) -> QuantizeReport:
    """Quantize ``model`` and measure what it costs in accuracy; see QuantizeReport."""
    from converters import load_source
    from edgex.artifacts import class_names_of, preprocessing_of
    from edgex.evaluation import dataset_for
    from edgex.export import export_model, with_preprocessing

    model = Path(model)
    _validate(mode, to, data, model)
    if max_drop is not None and max_drop < 0:
        raise EdgexError(f"--max-drop is in points of top-1 and must be >= 0, got {max_drop}")
    if auto_keep_float and (max_drop is None or to != "tflite" or mode != "int8"):
        raise EdgexError("--auto-keep-float needs --max-drop, --mode int8 and --to tflite")
    if keep_float and (to != "tflite" or mode != "int8"):
        raise EdgexError("--keep-float applies to --mode int8 --to tflite")
    out_dir = Path(out) if out else model.parent / f"quantize_{mode}_{to}"
    report_path = out_dir / REPORT_FILE
    refuse_overwrite(report_path, force)
    out_dir.mkdir(parents=True, exist_ok=True)

    source = with_preprocessing(load_source(model), preprocessing)
    if auto_keep_float and source.kind != "keras":
        raise EdgexError(
            f"--auto-keep-float ranks the layers of a Keras model by their quantization error; {model.name} "
            "is a SavedModel: pass the .keras file, or name layers with --keep-float"
        )
    meta = source.metadata
    spec = data or (meta.get("dataset") or {}).get("spec")
    if not spec:
        raise EdgexError("measuring accuracy needs data: pass --data digits, an image folder or tfds:NAME")
    dataset = dataset_for(meta, spec, int(source.input_shape[0]))
    preprocessing = preprocessing_of(meta)
    names = class_names_of(meta, len(dataset.class_names))
    float_top1 = (
        artifact_accuracy(model, dataset, preprocessing, names)
        if source.kind != "keras"
        else keras_accuracy(source.keras_model, dataset, preprocessing, names)
    )
    stem = model.stem
    float_format = "tflite" if to == "edgetpu" else to
    float_path = out_dir / f"{stem}_fp32.{'tflite' if float_format == 'tflite' else 'onnx'}"
    float_export = export_model(
        source.path, float_format, "fp32", data=spec, out=float_path, force=True, source=source, dataset=dataset
    )
    notes: list[str] = []
    qat: dict = {}
    convert_source = source
    if mode == "qat":
        convert_source, qat = _quantization_aware_training(
            source, dataset, out_dir / f"{stem}_qat.h5", epochs=epochs, lr=lr, progress=progress
        )
        qat["top1"] = keras_accuracy(convert_source.keras_model, dataset, preprocessing, names)
    suffix = "onnx" if to == "onnx" else "tflite"
    artifact = out_dir / (f"{stem}_{mode}_quant.tflite" if to == "edgetpu" else f"{stem}_{mode}.{suffix}")
    route = "tflite" if (mode == "qat" and to == "onnx") else "qdq"
    result = export_model(
        convert_source.path,
        to,
        MODES[mode],
        data=spec,
        out=artifact,
        force=True,
        keep_float=keep_float,
        calib_samples=calib_samples,
        onnx_int8_route=route,
        source=convert_source,
        dataset=dataset,
    )
    notes += list(result.notes)
    quant_top1 = artifact_accuracy(artifact, dataset, preprocessing, names)
    drop = 100 * (float_top1 - quant_top1)
    debug_layers: tuple[dict, ...] = ()
    errors = None
    if (debug or auto_keep_float) and to in ("tflite", "edgetpu") and source.kind == "keras":
        from converters.tflite import quantization_errors

        errors = quantization_errors(source, _calibration(dataset, preprocessing, calib_samples))
        debug_layers = tuple(asdict(e) for e in errors[:15])
        if mode == "qat" and debug:
            notes.append(
                "--debug with --mode qat: the per-layer errors are those of post-training int8 of the float "
                "model, the starting point that QAT improves on"
            )
    elif debug:
        notes.append("--debug reports per-layer errors of TFLite int8 models of Keras sources")
    auto_steps: list[dict] = []
    kept = tuple(keep_float)
    latency: dict = {}
    if auto_keep_float and drop > max_drop:
        full_int8 = artifact
        artifact, kept, quant_top1, auto_steps = _auto_keep_float(
            source,
            dataset,
            spec,
            errors,
            artifact,
            float_top1,
            max_drop,
            calib_samples,
            preprocessing,
            names,
            auto_keep_limit,
        )
        drop = 100 * (float_top1 - quant_top1)
        latency = _compare_latency(full_int8, artifact)
        result = None
    quant_size = file_size(artifact)
    float_size = float_export.size_bytes
    report = QuantizeReport(
        mode=mode,
        target=to,
        model=str(model),
        artifact=str(artifact),
        float_top1=float_top1,
        quant_top1=quant_top1,
        drop_points=drop,
        float_size_bytes=float_size,
        quant_size_bytes=quant_size,
        compression=float_size / quant_size if quant_size else float("nan"),
        samples=len(dataset.val),
        max_drop=max_drop,
        gate_passed=None if max_drop is None else drop <= max_drop,
        parity=asdict(result.parity) if result is not None else {},
        qat=qat,
        kept_float=kept,
        auto_keep_float=tuple(auto_steps),
        debug_layers=debug_layers,
        latency_ms=latency,
        float_artifact=float_export.path,
        notes=tuple(notes),
    )
    write_json_atomic(report_path, report.to_dict())
    return report


def _calibration(dataset, preprocessing, n: int):
    images, _ = dataset.train.take(n, seed=0).arrays()
    return preprocessing.apply(images)


def _quantization_aware_training(source, dataset, path: Path, *, epochs: int, lr: float, progress):
    """tfmot's quantize_model (SeparableConv2D split into depthwise + pointwise with fake-quant between), then
    fine-tuning; the QAT Keras model is saved and returned as the source of the int8 export.

    It is saved as HDF5: tfmot's quantize wrappers do not reload from the .keras format (variables mismatch)."""
    from converters.source import source_from_keras
    from devices.files import read_metadata, write_metadata
    from devices.tfkeras import tfmot as import_tfmot
    from edgex.training import fine_tune

    tfmot = import_tfmot()
    start = time.perf_counter()
    qat_model = tfmot.quantization.keras.quantize_model(source.keras_model)
    # A trained model only needs its weights nudged towards the int8 grid: a small learning rate, no augmentation.
    history = fine_tune(qat_model, dataset, epochs=epochs, lr=lr, augment=(), progress=progress)
    with atomic_path(path, overwrite=True) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras warns that HDF5 is a legacy format
        qat_model.save(tmp)
    write_metadata(path, {**read_metadata(source.path), "qat": True, "qat_history": history})
    return source_from_keras(qat_model, path), {
        "keras_model": str(path),
        "epochs": epochs,
        "lr": lr,
        "history": history,
        "seconds": time.perf_counter() - start,
    }


def _auto_keep_float(
    source, dataset, spec, errors, artifact, float_top1, max_drop, calib_samples, preprocessing, names, limit
):
    """Keep the worst layers in float, one at a time, until the drop is within ``max_drop``."""
    from edgex.export import export_model

    worst = []
    for error in errors:
        if error.layer and error.layer not in worst:
            worst.append(error.layer)
    steps, kept = [], []
    path, top1 = artifact, None
    for layer in worst[:limit]:
        kept.append(layer)
        path = artifact.with_name(f"{artifact.stem}_keep{len(kept)}.tflite")
        export_model(
            source.path,
            "tflite",
            "int8",
            data=spec,
            out=path,
            force=True,
            keep_float=tuple(kept),
            calib_samples=calib_samples,
            source=source,
            dataset=dataset,
        )
        top1 = artifact_accuracy(path, dataset, preprocessing, names)
        drop = 100 * (float_top1 - top1)
        steps.append(
            {"kept": layer, "artifact": str(path), "top1": top1, "drop_points": drop, "size_bytes": file_size(path)}
        )
        if drop <= max_drop:
            break
    return path, tuple(kept), top1, steps


def _compare_latency(full_int8: Path, selective: Path) -> dict:
    from devices.bench import BenchConfig, benchmark

    config = BenchConfig(warmup=3, runs=30, min_seconds=0.3)
    return {
        "full_int8_p50": benchmark(full_int8, config=config).latency.p50,
        "selective_p50": benchmark(selective, config=config).latency.p50,
    }
