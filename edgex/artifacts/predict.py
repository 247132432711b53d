"""``edgex predict`` as a library function: the top classes of image files, by any model format edgex writes,
with the preprocessing and class names recorded next to the model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from devices.classify import ImagePrediction
from devices.errors import EdgexError

if TYPE_CHECKING:
    from devices.metadata import ArtifactMetadata


@dataclass(frozen=True)
class PredictResult:
    model: str  # the file that ran
    runtime: str
    device: str
    preprocessing: str
    predictions: tuple[ImagePrediction, ...]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "runtime": self.runtime,
            "device": self.device,
            "preprocessing": self.preprocessing,
            "predictions": [p.to_dict() for p in self.predictions],
            "notes": list(self.notes),
        }


def runnable_file(path: Path, meta: ArtifactMetadata, device: str) -> tuple[Path, ArtifactMetadata, list[str]]:
    """An Edge TPU-compiled model runs on the CPU as the int8 model it was compiled from."""
    from devices.metadata import read_metadata

    twin = meta.compiled_from
    if twin and device == "cpu" and (path.parent / twin).is_file():
        cpu_path = path.parent / twin
        notes = [f"{path.name} needs an Edge TPU; ran {twin} on the CPU"]
        return cpu_path, read_metadata(cpu_path, missing=meta), notes
    return path, meta, []


def predict_images(
    model: str | Path,
    images,
    *,
    top_k: int = 3,
    preprocessing: str | None = None,
    runtime: str = "auto",
    device: str = "cpu",
    threads: int | None = None,
) -> PredictResult:
    """Top ``top_k`` classes of each image (files or folders of images) by ``model`` in its own runtime."""
    import devices
    from devices.classify import classify, image_files
    from devices.metadata import read_metadata
    from devices.preprocess import chosen_preprocessing

    path = Path(model)
    if not path.exists():
        raise EdgexError(f"model not found: {path}")
    files = image_files(images)
    path, meta, notes = runnable_file(path, read_metadata(path), device)
    prep = chosen_preprocessing(preprocessing, meta.preprocessing, str(path))
    loaded = devices.load_model(path, runtime=runtime, device=device, threads=threads)
    try:
        shape = meta.input_shape or loaded.inputs[0].shape[1:]
        names = meta.class_names
        found = classify(loaded.predict, files, (int(shape[0]), int(shape[1])), prep, names, top_k)
        return PredictResult(
            model=str(path),
            runtime=loaded.runtime,
            device=loaded.device,
            preprocessing=prep.name,
            predictions=tuple(found),
            notes=tuple(notes),
        )
    finally:
        loaded.close()
