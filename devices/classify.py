"""Classify image files with any loaded model: decode, resize, preprocess, run, take the top classes (numpy only,
so that the host's ``edgex predict`` and a bundle's ``python -m devices predict`` rank alike)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from devices.errors import EdgexError
from devices.preprocess import IMAGE_SUFFIXES, Preprocessing, load_image


@dataclass(frozen=True)
class ClassScore:
    name: str
    index: int
    score: float


@dataclass(frozen=True)
class ImagePrediction:
    image: str
    top: tuple[ClassScore, ...]

    def to_dict(self) -> dict:
        return {"image": self.image, "top": [{"class": t.name, "index": t.index, "score": t.score} for t in self.top]}


def image_files(paths) -> list[str]:
    """Image files named directly or found (recursively, sorted) in the folders named."""
    found: list[str] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise EdgexError(f"no images in {path} (looked for {', '.join(IMAGE_SUFFIXES)})")
            found += [str(p) for p in inside]
        elif path.is_file():
            found.append(str(path))
        else:
            raise EdgexError(f"image not found: {path}")
    return found


def classify(
    predict, images: list[str], size: tuple[int, int], preprocessing: Preprocessing, names, top_k: int = 3
) -> list[ImagePrediction]:
    """``predict``: float batch -> scores. One prediction per image, its ``top_k`` classes by score."""
    import numpy as np

    if top_k < 1:
        raise EdgexError(f"--top-k must be at least 1, got {top_k}")
    results = []
    for image in images:
        scores = np.asarray(predict(preprocessing.apply(load_image(image, size)[None])))[0]
        order = np.argsort(-scores, kind="stable")[:top_k]
        top = tuple(ClassScore(names[i] if i < len(names) else str(i), int(i), float(scores[i])) for i in order)
        results.append(ImagePrediction(image, top))
    return results
