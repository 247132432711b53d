"""Accuracy of any model artifact (.keras, .tflite, .onnx, SavedModel) on a dataset, through its own runtime."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from devices.errors import EdgexError
from devices.evaluate import Accuracy, evaluate
from devices.metadata import ArtifactMetadata, read_metadata
from devices.preprocess import preprocessing_named


@dataclass(frozen=True)
class EvalResult:
    model: str
    runtime: str
    device: str
    data: str
    split: str
    accuracy: Accuracy
    seconds: float  # running the samples through the model (not loading it or the data)
    notes: tuple[str, ...] = ()
    setup_seconds: float = 0.0  # loading the model and preparing it to run (LoadedModel.prepare)

    @property
    def images_per_s(self) -> float:
        return self.accuracy.samples / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "runtime": self.runtime,
            "device": self.device,
            "data": self.data,
            "split": self.split,
            "seconds": self.seconds,
            "setup_seconds": self.setup_seconds,
            "images_per_s": self.images_per_s,
            "notes": list(self.notes),
            **self.accuracy.to_dict(),
        }


def class_mismatch(model_names, data_names) -> str | None:
    """Why a model's classes are not the data's (counts and the first difference), or None when they are."""
    model_names, data_names = tuple(model_names), tuple(data_names)
    if model_names == data_names:
        return None
    counts = f"the model has {len(model_names)} classes and the data {len(data_names)}"
    for i, (ours, theirs) in enumerate(zip(model_names, data_names)):
        if ours != theirs:
            return f"{counts}; they first differ at position {i}: model {ours!r}, data {theirs!r}"
    shorter, longer = (model_names, data_names) if len(model_names) < len(data_names) else (data_names, model_names)
    owner = "model" if longer is model_names else "data"
    return f"{counts}; the first {len(shorter)} match, then the {owner} has {longer[len(shorter)]!r}"


def dataset_for(meta: ArtifactMetadata, data: str, image_size: int):
    """The dataset at a model's input size, split exactly as it was when the model was trained on it."""
    from edgex.data import load_dataset

    same = meta.dataset is not None and meta.dataset.spec == data
    return load_dataset(
        data,
        image_size,
        val_split=(same and meta.dataset.val_split) or 0.2,  # None when the data set has its own split
        seed=(same and meta.dataset.seed) or 0,
    )


def data_spec(meta: ArtifactMetadata, data: str | None) -> str | None:
    """The data a command on a model uses: ``data``, or the dataset its metadata says it was trained on."""
    return data or (meta.dataset.spec if meta.dataset else None)


def required_data_spec(meta: ArtifactMetadata, data: str | None, needs: str, name: str) -> str:
    """``data_spec``, or a one-line error when there is neither: ``needs`` begins it ("pruning fine-tunes on data"),
    and ``name`` is the model's file."""
    spec = data_spec(meta, data)
    if not spec:
        raise EdgexError(
            f"{needs}, and {name} records none (no metadata naming the data it was trained on): "
            "pass --data digits, an image folder or tfds:NAME"
        )
    return spec


def image_side(input_shape: tuple[int, ...]) -> int | None:
    """The square RGB side of an image model's input, or None for other inputs."""
    if len(input_shape) == 3 and input_shape[0] == input_shape[1] and input_shape[2] == 3:
        return int(input_shape[0])
    return None


def dataset_ahead(model: str | Path, data: str | None):
    """The dataset a command on ``model`` uses (``data``, or the one it was trained on), loading in a thread while
    the model loads (both take seconds at paper scale): a Future, at the input size the model's metadata records;
    None when the metadata does not say."""
    from concurrent.futures import ThreadPoolExecutor

    import edgex.data  # noqa: F401 - imported here, not in the thread while this one imports TensorFlow

    meta = read_metadata(model)
    spec = data_spec(meta, data)
    size = image_side(meta.input_shape)
    if not spec or size is None:
        return None
    pool = ThreadPoolExecutor(1, thread_name_prefix="edgex-data")
    ahead = pool.submit(dataset_for, meta, spec, size)
    pool.shutdown(wait=False)  # its thread ends with the load
    return ahead


def loaded_ahead(ahead, size: int | None):
    """The dataset loaded ahead, when it has the size the loaded model takes (else None: it is loaded again)."""
    if ahead is None:
        return None
    dataset = ahead.result()
    return dataset if dataset.image_size == size else None


def source_accuracy(
    source, dataset, preprocessing, class_names, split: str = "val", limit: int | None = None, stored: bool = True
):
    """Accuracy of a conversion source (Keras or SavedModel, in TensorFlow) on a split: computed once per source
    content, data, split and preprocessing in this process, and shared by quantize, prune and evaluate.
    ``stored``: outputs kept on disk by earlier commands may serve (see converters.output_store)."""
    from functools import partial

    from converters.source import remembered, source_outputs
    from devices.evaluate import accuracy_from_scores, predict_batches

    chosen = (dataset.val if split == "val" else dataset.train).take(limit)
    key = ("accuracy", dataset.fingerprint, split, limit, repr(sorted(preprocessing.to_dict().items())))

    def measure():
        outputs = partial(source_outputs, source, stored=stored)
        scores, labels = predict_batches(outputs, chosen.batches(64), preprocessing.apply)
        return accuracy_from_scores(scores, labels, class_names)

    return remembered(source, (*key, tuple(class_names)), measure)


def evaluate_model(
    path: str | Path,
    data: str = "digits",
    *,
    runtime: str = "auto",
    device: str = "cpu",
    threads: int | None = None,
    split: str = "val",
    limit: int | None = None,
    batch_size: int = 64,
    dataset=None,
    preprocessing: str | None = None,
) -> EvalResult:
    """Top-1/top-5, per-class accuracy and confusion matrix of a model artifact, run by its runtime: in batches
    where the model allows them, on every core unless ``threads`` says otherwise."""
    import devices
    from devices.registry import detect_runtime
    from devices.sysinfo import usable_cores

    if split not in ("val", "train"):
        raise EdgexError(f"unknown split {split!r}; choose one of: val, train")
    meta = read_metadata(path)
    if runtime == "auto":
        runtime = detect_runtime(path, device)
    if threads is None and runtime != "tensorflow":  # TensorFlow uses every core by default; the others do not
        threads = usable_cores()
    ahead = dataset_ahead(path, data) if dataset is None else None
    start = time.perf_counter()
    source = _conversion_source(path) if (runtime, device) == ("tensorflow", "cpu") else None
    model = source.reference() if source else devices.load_model(path, runtime=runtime, device=device, threads=threads)
    setup_seconds = time.perf_counter() - start
    try:
        dataset, names = _matching_dataset(model, meta, data, dataset, ahead)
        chosen = (dataset.val if split == "val" else dataset.train).take(limit)
        start = time.perf_counter()
        model.prepare(len(chosen))  # what the first run would build (a batch probe, a traced graph) is setup
        setup_seconds += time.perf_counter() - start
        start = time.perf_counter()
        prep = preprocessing_named(preprocessing) if preprocessing else meta.input_preprocessing
        if source:  # a source of conversions: its accuracy may be known already in this process
            accuracy = source_accuracy(source, dataset, prep, names, split, limit, stored=False)
        else:
            accuracy = evaluate(model, chosen.batches(batch_size), prep, names)
        seconds = time.perf_counter() - start
        notes = (model.batch_note,) if model.batch_note else ()
        return EvalResult(
            model=str(path),
            runtime=model.runtime,
            device=model.device,
            data=dataset.name,
            split=split,
            accuracy=accuracy,
            seconds=seconds,
            notes=notes,
            setup_seconds=setup_seconds,
        )
    finally:
        if source is None:  # a source's model stays loaded for the next command in this process
            model.close()


def _matching_dataset(model, meta: ArtifactMetadata, data: str, dataset, ahead=None):
    """(the dataset at the model's input size, the model's class names), refused when they do not match."""
    size = meta.input_shape[0] if meta.input_shape else int(model.inputs[0].shape[1])
    if dataset is None:
        dataset = loaded_ahead(ahead, size) or dataset_for(meta, data, size)
    elif dataset.image_size != size:
        raise EdgexError(f"dataset image size {dataset.image_size} does not match the model input {size}")
    classes = model.outputs[0].shape[-1]
    names = meta.class_names_or_indices(classes if classes > 0 else len(dataset.class_names))
    mismatch = class_mismatch(names, dataset.class_names)
    if mismatch:
        raise EdgexError(f"the model's classes differ from the data's: {mismatch}")
    return dataset, names


def _conversion_source(path):
    """The Keras or SavedModel file as a conversion source (loaded once per process), or None when it cannot be
    one (an input size that is not fixed): such files are evaluated through the TensorFlow backend directly."""
    from converters.source import load_source
    from devices.errors import ModelFileError

    try:
        return load_source(path)
    except ModelFileError:
        return None
