"""Accuracy of any loaded model on labelled images: one loop for Keras, TFLite and ONNX alike."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np

from devices.errors import EdgexError


@dataclass(frozen=True)
class Accuracy:
    top1: float  # fraction in [0, 1]
    top5: float
    samples: int
    class_names: tuple[str, ...]
    per_class: tuple[float, ...]  # recall of each class
    confusion: tuple[tuple[int, ...], ...]  # rows: true class, columns: predicted class

    def to_dict(self) -> dict:
        data = asdict(self)
        data["per_class"] = dict(zip(self.class_names, self.per_class))
        data["confusion"] = [list(r) for r in self.confusion]
        return data


def accuracy_from_scores(scores: np.ndarray, labels: np.ndarray, class_names) -> Accuracy:
    """Top-1/top-5, per-class accuracy and the confusion matrix from class scores (N, classes)."""
    scores = np.asarray(scores)
    labels = np.asarray(labels).astype(np.int64)
    if scores.ndim != 2 or len(scores) != len(labels):
        raise EdgexError(f"expected scores of shape (N, classes) for {len(labels)} labels, got {scores.shape}")
    classes = scores.shape[1]
    if len(class_names) != classes:
        raise EdgexError(f"the model has {classes} outputs but the data has {len(class_names)} classes")
    if len(labels) == 0:
        raise EdgexError("no samples to evaluate")
    predicted = scores.argmax(axis=1)
    k = min(5, classes)
    topk = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    totals = confusion.sum(axis=1)
    per_class = np.where(totals > 0, np.diag(confusion) / np.maximum(totals, 1), np.nan)
    return Accuracy(
        top1=float((predicted == labels).mean()),
        top5=float((topk == labels[:, None]).any(axis=1).mean()),
        samples=len(labels),
        class_names=tuple(class_names),
        per_class=tuple(float(x) for x in per_class),
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
    )


def predict_batches(
    predict: Callable[[np.ndarray], np.ndarray],
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    preprocess: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``predict`` over (uint8 images, labels) batches; returns (scores, labels)."""
    scores, labels = [], []
    for images, y in batches:
        scores.append(np.asarray(predict(preprocess(images))))
        labels.append(np.asarray(y))
    if not scores:
        raise EdgexError("no samples to evaluate")
    return np.concatenate(scores), np.concatenate(labels)


def evaluate(model, batches, preprocessing, class_names) -> Accuracy:
    """Accuracy of a loaded model (any backend) on (uint8 images, labels) batches."""
    scores, labels = predict_batches(model.predict, batches, preprocessing.apply)
    return accuracy_from_scores(scores, labels, class_names)
