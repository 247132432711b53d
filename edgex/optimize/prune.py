"""`edgex prune`: magnitude pruning with tensorflow-model-optimization, reported honestly — sparsity per layer,
accuracy before and after, file sizes raw and gzip-compressed, and latency as measured (not as hoped)."""

from __future__ import annotations

import gzip
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from converters.registry import CALIBRATION_SAMPLES
from devices.errors import EdgexError, choice_error
from devices.files import atomic_path, file_size, refuse_overwrite, write_json_atomic
from devices.metadata import ArtifactMetadata, read_metadata, write_metadata
from edgex.optimize.common import setup
from edgex.progress import Progress
from edgex.training.trainer import steps_per_epoch

if TYPE_CHECKING:
    import numpy as np

SCHEDULES = ("polynomial", "constant")
PATTERNS = ("2:4",)
REPORT_FILE = "prune_report.json"
_KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel")


@dataclass(frozen=True)
class WeightSparsity:
    layer: str
    weight: str  # kernel, depthwise_kernel or pointwise_kernel
    size: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.size if self.size else 0.0


@dataclass(frozen=True)
class PruneReport:
    model: str
    pruned_model: str
    target_sparsity: float
    schedule: str
    pattern: str | None
    epochs: int
    steps: int
    end_step: int
    frequency: int
    sparsity_pruned_weights: float  # over the weights tfmot prunes
    sparsity_all_kernels: float  # over every convolution and dense kernel
    sparsity_by_kind: dict  # kernel / pointwise_kernel / depthwise_kernel
    layers: tuple[dict, ...]
    float_top1: float
    pruned_top1: float
    drop_points: float
    sizes: dict  # raw and gzip bytes of the dense and pruned .keras and fp32 .tflite files
    gzip_ratio: float  # pruned / dense, gzip-compressed fp32 TFLite
    latency_ms: dict  # measured p50 of the dense and pruned fp32 TFLite models ({} when not measured)
    history: dict = field(default_factory=dict)
    then_qat: PrunePreservingQat | None = None
    notes: tuple[str, ...] = ()
    data: str = ""  # the data spec fine-tuning and accuracy used
    data_recorded: bool = False  # it came from the model's metadata (no --data)

    def to_json(self) -> dict:
        return asdict(self)


def pruning_schedule_steps(total_steps: int) -> tuple[int, int]:
    """(end_step, frequency) so that the schedule fires about ten times and reaches its target at 60% of the
    fine-tuning; the rest recovers accuracy at full sparsity."""
    if total_steps < 2:
        raise EdgexError(f"pruning needs at least 2 fine-tuning steps, got {total_steps}; raise --epochs")
    end = max(1, int(total_steps * 0.6))
    frequency = max(1, end // 10)
    end = max(frequency, end // frequency * frequency)  # pruning happens at multiples of the frequency
    return end, frequency


def kernel_sparsity(model, pruned_kinds: set[tuple[str, str]] | None = None) -> list[WeightSparsity]:
    rows = []
    for layer in model.layers:
        for weight in layer.weights:
            kind = weight.name.split("/")[-1].split(":")[0]
            if kind in _KERNELS:
                value = weight.numpy()
                rows.append(WeightSparsity(layer.name, kind, int(value.size), int((value == 0).sum())))
    return rows


def _gzip_size(path: Path) -> int:
    if path.is_dir():
        raise EdgexError(f"{path} is a folder")
    return len(gzip.compress(path.read_bytes(), compresslevel=6))  # what `gzip FILE` does; 9 is 10x slower here


def _validate(model: Path, sparsity: float, schedule: str, pattern: str | None, data: str | None, epochs: int):
    if not model.exists():
        raise EdgexError(f"model file not found: {model}")
    if model.suffix not in (".keras", ".h5"):
        raise EdgexError(f"pruning fine-tunes a Keras model; {model.name} is not a Keras file (.keras, .h5)")
    if not 0 < sparsity < 1:
        raise EdgexError(f"sparsity must be in (0, 1), got {sparsity}")
    if schedule not in SCHEDULES:
        raise choice_error("schedule", schedule, SCHEDULES)
    if pattern is not None and pattern not in PATTERNS:
        raise choice_error("pattern", pattern, PATTERNS)
    if pattern == "2:4" and sparsity != 0.5:
        raise EdgexError(
            f"--pattern 2:4 keeps 2 of every 4 weights (50% sparsity); pass --sparsity 0.5, not {sparsity}"
        )
    if epochs < 1:
        raise EdgexError(f"--epochs must be at least 1, got {epochs}")


def prune(
    model: str | Path,
    sparsity: float,
    *,
    data: str | None = None,
    schedule: str = "polynomial",
    epochs: int = 8,
    pattern: str | None = None,
    then_qat: bool = False,
    qat_epochs: int = 2,
    lr: float = 3e-4,
    out: str | Path | None = None,
    force: bool = False,
    measure_latency: bool = True,
    progress: Progress | None = None,
) -> PruneReport:
    """Prune ``model`` to ``sparsity`` while fine-tuning, strip the wrappers, and measure the result
    (``measure_latency=False`` leaves latency to the caller, who may be running other work on the machine)."""
    model = Path(model)
    _validate(model, sparsity, schedule, pattern, data, epochs)
    out_dir = _output_folder(model, sparsity, out, force)
    s = setup(model, data, "pruning fine-tunes on data")  # by default, the data the model was trained on
    float_top1 = s.source_top1()
    steps = steps_per_epoch(s.dataset) * epochs
    end_step, frequency = pruning_schedule_steps(steps)
    wrapped, pruned_names = _wrap_for_pruning(s.source.keras_model, sparsity, schedule, pattern, end_step, frequency)
    stripped, history = _fine_tune_and_strip(wrapped, s, epochs, lr, progress)
    pruned_path = out_dir / f"{model.stem}_pruned{round(sparsity * 100)}.keras"
    pruning = {"target_sparsity": sparsity, "schedule": schedule, "pattern": pattern, "epochs": epochs}
    _save_pruned(stripped, pruned_path, s.metadata.with_sections(pruning=pruning))
    found = _sparsity_found(kernel_sparsity(stripped), pruned_names)
    sizes, dense_tflite, pruned_tflite = _file_sizes(s.source, stripped, model, pruned_path, out_dir)
    latency = _latency(dense_tflite, pruned_tflite) if measure_latency else {}
    qat_report = _prune_preserving_qat(stripped, pruned_path, s, out_dir, qat_epochs, progress) if then_qat else None
    pruned_top1 = s.keras_top1(stripped)
    report = PruneReport(
        model=str(model),
        pruned_model=str(pruned_path),
        target_sparsity=sparsity,
        schedule=schedule,
        pattern=pattern,
        epochs=epochs,
        steps=steps,
        end_step=end_step,
        frequency=frequency,
        **found,
        float_top1=float_top1,
        pruned_top1=pruned_top1,
        drop_points=100 * (float_top1 - pruned_top1),
        sizes=sizes,
        gzip_ratio=sizes["pruned_tflite"]["gzip"] / sizes["dense_tflite"]["gzip"],
        latency_ms=latency,
        history=history,
        then_qat=qat_report,
        notes=_notes(sum(layer["pruned"] for layer in found["layers"]), len(found["layers"]), latency),
        data=s.data,
        data_recorded=s.data_recorded,
    )
    write_json_atomic(out_dir / REPORT_FILE, report.to_json())
    return report


def _output_folder(model: Path, sparsity: float, out, force: bool) -> Path:
    out_dir = Path(out) if out else model.parent / f"prune_{round(sparsity * 100)}"
    refuse_overwrite(out_dir / REPORT_FILE, force)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _zeros_share(rows: list[WeightSparsity]) -> float:
    return sum(r.zeros for r in rows) / max(1, sum(r.size for r in rows))


def _sparsity_found(rows: list[WeightSparsity], pruned_names: set[tuple[str, str]]) -> dict:
    """The report's sparsity fields: over the pruned weights, over all kernels, by kernel kind, and per kernel."""
    pruned = [r for r in rows if (r.layer, r.weight) in pruned_names]
    return {
        "sparsity_pruned_weights": _zeros_share(pruned),
        "sparsity_all_kernels": _zeros_share(rows),
        # kernel / pointwise_kernel / depthwise_kernel -> the share of zeros among those weights
        "sparsity_by_kind": {k: _zeros_share(c) for k in _KERNELS if (c := [r for r in rows if r.weight == k])},
        "layers": tuple({**asdict(r), "sparsity": r.sparsity, "pruned": r in pruned} for r in rows),
    }


def _wrap_for_pruning(keras_model, sparsity, schedule, pattern, end_step, frequency):
    """The model with tfmot's pruning wrappers and its trained weights; and the (layer, weight) pairs pruned."""
    from devices.tfkeras import keras
    from devices.tfkeras import tfmot as import_tfmot

    sparsity_api = import_tfmot().sparsity.keras
    if schedule == "polynomial":
        schedule_obj = sparsity_api.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=end_step, frequency=frequency)
    else:
        schedule_obj = sparsity_api.ConstantSparsity(sparsity, begin_step=0, frequency=frequency)
    kwargs = {"sparsity_m_by_n": (2, 4)} if pattern == "2:4" else {}
    first, last = _first_and_last(keras_model)

    def wrap(layer):
        fresh = layer.__class__.from_config(layer.get_config())
        # The first convolution and the classifier are small and the most sensitive: they stay dense.
        if layer.__class__.__name__ not in _PRUNABLE or layer.name in (first, last):
            return fresh
        return sparsity_api.prune_low_magnitude(fresh, pruning_schedule=schedule_obj, **kwargs)

    wrapped = keras().models.clone_model(keras_model, clone_function=wrap)
    wrapped.set_weights(_wrapped_weights(wrapped, keras_model))
    pruned_names = {
        (layer.layer.name, w.name.split("/")[-1].split(":")[0])
        for layer in wrapped.layers
        if hasattr(layer, "layer")
        for w, _, _ in getattr(layer, "pruning_vars", [])
    }
    return wrapped, pruned_names


def _fine_tune_and_strip(wrapped, s, epochs: int, lr: float, progress):
    """Fine-tune with the pruning schedule running, then remove the wrappers; returns (model, history)."""
    from devices.tfkeras import tfmot as import_tfmot
    from edgex.training.trainer import fine_tune

    sparsity_api = import_tfmot().sparsity.keras
    callbacks = [sparsity_api.UpdatePruningStep()]
    history = fine_tune(wrapped, s.dataset, epochs=epochs, lr=lr, callbacks=callbacks, progress=progress)
    return sparsity_api.strip_pruning(wrapped), history


def _save_pruned(stripped, path: Path, metadata: ArtifactMetadata) -> None:
    from edgex.training.trainer import without_optimizer

    with atomic_path(path, overwrite=True) as tmp:
        without_optimizer(stripped).save(tmp)
    write_metadata(path, metadata)


def _file_sizes(source, stripped, model: Path, pruned_path: Path, out_dir: Path):
    """Raw and gzip sizes of the dense and pruned files; what ships is the fp32 TFLite model, and sparsity shrinks
    only its compressed size. Returns (sizes, dense fp32 TFLite, pruned fp32 TFLite)."""
    from converters import convert
    from converters.registry import artifact_name
    from converters.source import source_from_keras

    dense = Path(convert(source, "tflite", "fp32", out=out_dir / f"{model.stem}_dense_fp32.tflite", force=True).path)
    out = out_dir / artifact_name(pruned_path.stem, "tflite", "fp32")
    pruned = Path(convert(source_from_keras(stripped, pruned_path), "tflite", "fp32", out=out, force=True).path)
    files = {"dense_keras": model, "pruned_keras": pruned_path, "dense_tflite": dense, "pruned_tflite": pruned}
    return {name: {"raw": file_size(path), "gzip": _gzip_size(path)} for name, path in files.items()}, dense, pruned


def _notes(pruned: int, kernels: int, latency: dict) -> tuple[str, ...]:
    notes = [
        "sparsity leaves the raw file size unchanged (zeros are stored like any weight); it pays off when the "
        "file is compressed for download or storage",
        f"tfmot pruned {pruned} of {kernels} kernels: the pointwise halves of separable "
        "convolutions but never their depthwise kernels; the first convolution and the classifier stay dense",
    ]
    if latency and latency["speedup"] < 1.05:
        notes.append(
            f"no speed-up measured: {latency['dense_p50']:.3f} ms dense vs {latency['pruned_p50']:.3f} ms "
            "pruned; LiteRT runs dense kernels with their zeros"
        )
    return tuple(notes)


_PRUNABLE = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Dense")


def _first_and_last(model) -> tuple[str, str]:
    names = [layer.name for layer in model.layers if layer.__class__.__name__ in _PRUNABLE]
    return (names[0], names[-1]) if names else ("", "")


def _wrapped_weights(wrapped, original) -> list[np.ndarray]:
    """The trained weights in the order of the pruning-wrapped model (whose wrappers add mask/threshold/step)."""
    values = {w.name: v for w, v in zip(original.weights, original.get_weights())}
    result = []
    for weight, current in zip(wrapped.weights, wrapped.get_weights()):
        name = weight.name.replace("prune_low_magnitude_", "")
        result.append(values.get(name, current))
    return result


def _latency(dense: Path, pruned: Path) -> dict:
    from edgex.optimize.common import latency_pair

    dense_p50, pruned_p50 = latency_pair(dense, pruned, warmup=5, runs=50, min_seconds=0.5)
    return {"dense_p50": dense_p50, "pruned_p50": pruned_p50, "speedup": dense_p50 / pruned_p50}


@dataclass(frozen=True)
class PrunePreservingQat:
    """``--then-qat``: tfmot's prune-preserving QAT of the pruned model, and its int8 export."""

    qat_model: str  # HDF5
    int8_model: str
    history: dict
    qat_top1: float
    int8_top1: float
    int8_weight_sparsity: float  # zeros among the int8 weight tensors
    float_sparsity: float  # zeros among the pruned float model's kernels
    int8_size: int
    int8_gzip: int


def _prune_preserving_qat(stripped, pruned_path: Path, s, out_dir: Path, epochs: int, progress) -> PrunePreservingQat:
    """tfmot's prune-preserving QAT, an int8 export, and the sparsity that survives into the int8 file."""
    from converters import convert
    from converters.source import source_from_keras
    from devices.tfkeras import tfmot as import_tfmot
    from edgex.optimize.common import calibrate_qat_ranges, save_qat_model
    from edgex.training.trainer import fine_tune

    tfmot = import_tfmot()
    annotated = tfmot.quantization.keras.quantize_annotate_model(stripped)
    qat = tfmot.quantization.keras.quantize_apply(
        annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    )
    calibrate_qat_ranges(qat, s.calibration(CALIBRATION_SAMPLES))
    history = fine_tune(qat, s.dataset, epochs=epochs, lr=5e-6, augment=(), progress=progress)
    qat_path = out_dir / f"{pruned_path.stem}_qat.h5"
    save_qat_model(qat, qat_path, read_metadata(pruned_path))
    int8 = convert(
        source_from_keras(qat, qat_path),
        "tflite",
        "int8",
        out=out_dir / f"{pruned_path.stem}_int8.tflite",
        force=True,
        calibration=s.calibration(CALIBRATION_SAMPLES),
        parity_inputs=s.preprocessing.apply(s.dataset.val.take(256).arrays()[0]),
    )
    return PrunePreservingQat(
        qat_model=str(qat_path),
        int8_model=int8.path,
        history=history,
        qat_top1=s.keras_top1(qat),
        int8_top1=s.artifact_top1(int8.path),
        int8_weight_sparsity=int8_weight_sparsity(Path(int8.path)),
        float_sparsity=_zeros_share(kernel_sparsity(stripped)),
        int8_size=file_size(int8.path),
        int8_gzip=_gzip_size(Path(int8.path)),
    )


def int8_weight_sparsity(path: Path) -> float:
    """Share of zeros among the int8 weight tensors (rank >= 2 constants) of a TFLite file."""
    import numpy as np

    from devices.litert import constant_tensors, graph_interpreter

    interp = graph_interpreter(path)
    constants = constant_tensors(interp)
    zeros = total = 0
    for t in interp.get_tensor_details():
        index = int(t["index"])
        if index not in constants or np.dtype(t["dtype"]) != np.int8 or len(t["shape"]) < 2:
            continue
        value = interp.get_tensor(index)
        zeros += int((value == 0).sum())
        total += int(value.size)
    return zeros / total if total else 0.0
