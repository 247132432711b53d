"""Accuracy of any model artifact (.keras, .tflite, .onnx, SavedModel) on a dataset, through its own runtime."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from devices.errors import EdgexError
from devices.evaluate import Accuracy, evaluate
from devices.files import read_metadata
from devices.preprocess import preprocessing_named
from edgex.artifacts import class_names_of, preprocessing_of


@dataclass(frozen=True)
class EvalResult:
    model: str
    runtime: str
    device: str
    data: str
    split: str
    accuracy: Accuracy
    seconds: float

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "runtime": self.runtime,
            "device": self.device,
            "data": self.data,
            "split": self.split,
            "seconds": self.seconds,
            **self.accuracy.to_dict(),
        }


def dataset_for(meta: dict, data: str, image_size: int):
    """The dataset at a model's input size, split exactly as it was when the model was trained on it."""
    from edgex.data import load_dataset

    trained_on = meta.get("dataset") or {}
    same = trained_on.get("spec") == data
    return load_dataset(
        data,
        image_size,
        val_split=trained_on.get("val_split", 0.2) if same else 0.2,
        seed=trained_on.get("seed", 0) if same else 0,
    )


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
    """Top-1/top-5, per-class accuracy and confusion matrix of a model artifact, run by its runtime."""
    import devices

    if split not in ("val", "train"):
        raise EdgexError(f"unknown split {split!r}; choose one of: val, train")
    meta = read_metadata(path)
    model = devices.load_model(path, runtime=runtime, device=device, threads=threads)
    try:
        shape = model.inputs[0].shape
        size = int(meta["input_shape"][0]) if meta.get("input_shape") else int(shape[1])
        if dataset is None:
            dataset = dataset_for(meta, data, size)
        elif dataset.image_size != size:
            raise EdgexError(f"dataset image size {dataset.image_size} does not match the model input {size}")
        classes = model.outputs[0].shape[-1]
        names = class_names_of(meta, classes if classes > 0 else len(dataset.class_names))
        if tuple(names) != tuple(dataset.class_names):
            raise EdgexError(
                f"the model's classes ({', '.join(names[:6])}...) differ from the data's "
                f"({', '.join(dataset.class_names[:6])}...)"
            )
        chosen = (dataset.val if split == "val" else dataset.train).take(limit)
        start = time.perf_counter()
        prep = preprocessing_named(preprocessing) if preprocessing else preprocessing_of(meta)
        accuracy = evaluate(model, chosen.batches(batch_size), prep, names)
        return EvalResult(
            str(path), model.runtime, model.device, dataset.name, split, accuracy, time.perf_counter() - start
        )
    finally:
        model.close()
