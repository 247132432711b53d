"""What `edgex quantize` and `edgex prune` share: loading the model with its data, accuracy through a runtime, the
QAT model saved as HDF5, and a latency comparison of two files."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from devices.files import atomic_path
from devices.metadata import ArtifactMetadata, write_metadata

if TYPE_CHECKING:
    import numpy as np


def keras_accuracy(keras_model, dataset, preprocessing, class_names) -> float:
    """Top-1 of an in-memory Keras model through the TensorFlow backend of ``devices``."""
    from devices.evaluate import evaluate
    from devices.tensorflow import from_keras

    return evaluate(from_keras(keras_model), dataset.val.batches(128), preprocessing, class_names).top1


def artifact_accuracy(path: str | Path, dataset, preprocessing, class_names) -> float:
    """Top-1 of a model file through its own runtime."""
    import devices
    from devices.evaluate import evaluate
    from devices.sysinfo import usable_cores

    with devices.load_model(path, threads=usable_cores()) as model:
        return evaluate(model, dataset.val.batches(64), preprocessing, class_names).top1


@dataclass(frozen=True)
class Setup:
    """A model to optimize, loaded with the data it is fine-tuned, calibrated and measured on."""

    source: object  # converters.SourceModel
    data: str  # the data spec (digits, a folder, tfds:NAME)
    dataset: object  # edgex.data.Dataset
    preprocessing: object  # devices.preprocess.Preprocessing
    class_names: tuple[str, ...]
    data_recorded: bool = False  # the data came from the model's metadata (no --data)

    @property
    def metadata(self) -> ArtifactMetadata:
        return self.source.metadata

    def keras_top1(self, keras_model) -> float:
        return keras_accuracy(keras_model, self.dataset, self.preprocessing, self.class_names)

    def artifact_top1(self, path: str | Path) -> float:
        return artifact_accuracy(path, self.dataset, self.preprocessing, self.class_names)

    def source_top1(self) -> float:
        """The accuracy of the model being optimized, computed once per source content, data and preprocessing in
        this process (quantize, prune and evaluate share it)."""
        from edgex.artifacts.accuracy import source_accuracy

        return source_accuracy(self.source, self.dataset, self.preprocessing, self.class_names).top1

    def calibration(self, samples: int) -> np.ndarray:
        """``samples`` preprocessed training images, the same ones every time."""
        images, _ = self.dataset.train.take(samples, seed=0).arrays()
        return self.preprocessing.apply(images)


def setup(model: Path, data: str | None, needs: str, preprocessing: str | None = None) -> Setup:
    """Load ``model`` and its data: ``data``, or by default the data it was trained on. ``needs`` begins the error
    raised when there is neither ("pruning fine-tunes on data"). ``preprocessing`` (a name) replaces the one the
    model's metadata records, for models edgex did not make."""
    from converters.source import load_source
    from edgex.artifacts.accuracy import dataset_ahead, dataset_for, loaded_ahead, required_data_spec
    from edgex.artifacts.convert import with_preprocessing

    ahead = dataset_ahead(model, data)
    source = with_preprocessing(load_source(model), preprocessing)
    meta = source.metadata
    spec = required_data_spec(meta, data, needs, model.name)
    size = int(source.input_shape[0])
    dataset = loaded_ahead(ahead, size) or dataset_for(meta, spec, size)
    names = meta.class_names_or_indices(len(dataset.class_names))
    return Setup(
        source=source,
        data=spec,
        dataset=dataset,
        preprocessing=meta.input_preprocessing,
        class_names=names,
        data_recorded=not data,
    )


def calibrate_qat_ranges(qat_model, samples: np.ndarray, batch: int = 64) -> int:
    """Before a tfmot QAT model is fine-tuned, set each weight's range from the weight, and each activation's range
    to what its tensor spans on ``samples`` (0 included) as post-training int8 calibration does; returns how many
    activation ranges were set.

    tfmot starts the input's range at [0, 0] (set by the first training batch) and every other activation range at
    [-6, 6], moved by a moving average of decay 0.999: the hundred steps of a short fine-tuning leave it 90% that
    guess, a grid far coarser than the activations need, on which one-step rounding differences between the
    fake-quant graph and the int8 kernels grow layer after layer (on the tiny preset, 3% of top-1 answers differed
    between the QAT model and its int8 export)."""
    for layer in qat_model.submodules:
        for weight, quantizer, variables in getattr(layer, "_weight_vars", ()):  # a wrapped layer's weights
            quantizer(weight, True, variables)  # what each training step does: the range of the weight as it is
    observer = _RangeObserver()
    swapped = list(_range_quantizers(qat_model))
    for owner, attribute, _ in swapped:
        setattr(owner, attribute, observer if attribute == "quantizer" else [observer])
    try:
        for start in range(0, len(samples), batch):
            qat_model(samples[start : start + batch], training=False)
    finally:
        for owner, attribute, quantizer in swapped:
            setattr(owner, attribute, quantizer)
    return len(observer.seen)


def _range_quantizers(qat_model):
    """(owner, attribute, quantizer) for each quantizer that learns a range from the values it sees: the input's
    (QuantizeLayer), a wrapped layer's activation's and a wrapped layer's output's."""
    from devices.tfkeras import tfmot

    quantizers = tfmot().quantization.keras.quantizers
    learns = (quantizers.MovingAverageQuantizer, quantizers.AllValuesQuantizer)
    for layer in qat_model.submodules:
        for owner in (layer, *getattr(layer, "_quantize_activations", ())):
            quantizer = getattr(owner, "quantizer", None)
            if isinstance(quantizer, learns) and not quantizer.per_axis:
                yield owner, "quantizer", quantizer
        outputs = getattr(layer, "_output_quantizers", None)
        if outputs and isinstance(outputs[0], learns) and not outputs[0].per_axis:
            yield layer, "_output_quantizers", outputs


class _RangeObserver:
    """Stands in for tfmot's range quantizers during calibration: widens the range variables it is handed to the
    values it sees, and passes the values on unquantized (the float ranges, as TFLite's calibrator records them)."""

    def __init__(self):
        self.seen: set[int] = set()  # the range variables set so far (their first batch replaces tfmot's guess)

    def __call__(self, inputs, training, weights, **kwargs):
        from devices.tfkeras import tensorflow

        tf = tensorflow()
        low, high = weights["min_var"], weights["max_var"]
        batch_low = tf.minimum(tf.reduce_min(inputs), 0.0)
        batch_high = tf.maximum(tf.reduce_max(inputs), 0.0)
        if id(low) in self.seen:
            batch_low, batch_high = tf.minimum(low, batch_low), tf.maximum(high, batch_high)
        low.assign(batch_low)
        high.assign(batch_high)
        self.seen.add(id(low))
        return inputs


def save_qat_model(qat_model, path: Path, metadata: ArtifactMetadata) -> None:
    """Save a tfmot QAT model as HDF5 (its quantize wrappers do not reload from the .keras format) with metadata."""
    with atomic_path(path, overwrite=True) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras warns that HDF5 is a legacy format
        qat_model.save(tmp)
    write_metadata(path, metadata)


def latency_pair(first: Path, second: Path, *, warmup: int, runs: int, min_seconds: float) -> tuple[float, float]:
    """The p50 latency (ms) of two model files, timed interleaved in one process (devices.interleave)."""
    from devices.bench import BenchConfig
    from devices.interleave import interleaved_files

    config = BenchConfig(warmup=warmup, runs=runs, min_seconds=min_seconds)
    first_run, second_run = interleaved_files([first, second], config=config).results
    return first_run.latency.p50, second_run.latency.p50
