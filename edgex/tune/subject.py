"""The model being tuned, with what every candidate is measured against: its data at each input size, the two
halves of its validation split (one to select with, one held out for the winner), and its own float accuracy on
each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from devices.errors import EdgexError
from devices.files import utc_now
from devices.metadata import ArtifactMetadata, read_metadata


@dataclass(frozen=True)
class SplitData:
    """The data at one input size: the dataset (its training split fine-tunes) and the validation halves."""

    dataset: object  # edgex.data.Dataset
    selection: object  # edgex.data.Split: what the search selects on
    heldout: object  # edgex.data.Split: what only the winner is checked on


class Subject:
    """The model being tuned and its data."""

    def __init__(self, model_path: Path, tune, data: str | None):
        from converters.source import load_source
        from edgex.artifacts.accuracy import class_mismatch, required_data_spec
        from edgex.models.xception import XceptionConfig

        self.model_path, self.tune = Path(model_path), tune
        self._sizes: dict[int, SplitData] = {}
        self.source = load_source(self.model_path)
        if self.source.kind != "keras":
            raise EdgexError(f"edgex tune starts from a Keras model (.keras or .h5), got {self.model_path}")
        self.metadata = read_metadata(self.model_path)
        self.data = required_data_spec(self.metadata, data, "tuning measures on data", self.model_path.name)
        recorded = self.metadata.model_config
        self.config = XceptionConfig.from_dict(recorded) if recorded else None
        self.input_size = int(self.source.input_shape[0])
        self.preprocessing = self.metadata.input_preprocessing
        self.class_names = self.metadata.class_names_or_indices(int(self.teacher.outputs[0].shape[-1]))
        mismatch = class_mismatch(self.class_names, self.at_size(self.input_size).dataset.class_names)
        if mismatch:
            raise EdgexError(f"the model's classes differ from the data's ({self.data}): {mismatch}")
        own = self.at_size(self.input_size)
        self.float_selection = self.keras_top1(self.teacher, own.selection)
        self.float_heldout = self.keras_top1(self.teacher, own.heldout)

    @property
    def teacher(self):
        """The model itself, in Keras."""
        return self.source.keras_model

    def at_size(self, size: int) -> SplitData:
        """The data at an input size, split as the model's training split it, the validation split halved."""
        from edgex.artifacts.accuracy import dataset_for

        if size not in self._sizes:
            dataset = dataset_for(self.metadata, self.data, size)
            selection, heldout = dataset.val.halves(seed=self.tune.seed)
            self._sizes[size] = SplitData(dataset, selection, heldout)
        return self._sizes[size]

    def keras_top1(self, keras_model, split) -> float:
        """Top-1 of an in-memory Keras model on a split (TensorFlow backend of devices)."""
        from devices.evaluate import evaluate
        from devices.tensorflow import from_keras

        return evaluate(from_keras(keras_model), split.batches(128), self.preprocessing, self.class_names).top1

    def artifact_top1(self, path: Path, split, options: dict) -> float:
        """Top-1 of an artifact through its own runtime (with the candidate's runtime options) on a split."""
        import devices
        from devices.evaluate import evaluate
        from devices.sysinfo import usable_cores

        with devices.load_model(path, threads=usable_cores(), **options) as model:
            return evaluate(model, split.batches(64), self.preprocessing, self.class_names).top1

    def network_metadata(self, config, record: dict) -> ArtifactMetadata:
        """The metadata of a changed network: the model's own, with its new config and how it was made."""
        from dataclasses import replace

        changed = replace(
            self.metadata,
            created=utc_now(),
            input_shape=(config.input_size, config.input_size, 3),
            model_config=config.to_dict(),
            params=None,
            metrics=None,
        )
        return changed.with_sections(tune={**record, "teacher": str(self.model_path)})
