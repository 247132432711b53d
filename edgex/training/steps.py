"""The named steps of ``edgex.training.trainer.train``: the starting model and its data, the per-epoch callbacks, and
what is measured and recorded at the end."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from devices.files import utc_now, write_json_atomic
from devices.metadata import ArtifactMetadata
from devices.preprocess import XCEPTION
from devices.sysinfo import versions
from edgex.progress import BatchEnd, EpochBegin, EpochEnd, Note, Progress

HISTORY_FILE = "history.json"


def read_epoch_history(backup_dir: Path) -> list[dict]:
    """The metrics of every finished epoch of the run checkpointed in ``backup_dir``."""
    path = Path(backup_dir) / HISTORY_FILE
    try:
        return list(json.loads(path.read_text())) if path.is_file() else []
    except ValueError:
        return []


def epoch_callbacks(progress: Progress | None, backup_dir: Path, epochs: int):
    from devices.tfkeras import keras

    k = keras()

    history_file = backup_dir / HISTORY_FILE

    class GuardedBackup(k.callbacks.BackupAndRestore):
        """Checkpoints every finished epoch (with its metrics, so that a resumed run reports all of them), but
        never a diverged one. The checkpoints outlive training: train() deletes them once the model is saved."""

        diverged = False

        def on_epoch_end(self, epoch, logs=None):
            if self.diverged or any(not math.isfinite(float(v)) for v in (logs or {}).values()):
                self.diverged = True
                return
            super().on_epoch_end(epoch, logs)
            history = read_epoch_history(backup_dir)[:epoch]
            history.append({key: float(value) for key, value in (logs or {}).items()})
            write_json_atomic(history_file, history)

    class NanGuard(k.callbacks.Callback):
        """Like TerminateOnNaN, remembering where it happened."""

        where: tuple[int, int] | None = None
        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                self.where = (self.epoch + 1, batch + 1)
                self.model.stop_training = True

    backup = GuardedBackup(backup_dir=str(backup_dir), save_freq="epoch", delete_checkpoint=False)
    nan = NanGuard()
    callbacks = [nan, backup]
    if progress is not None:
        callbacks.append(progress_callback(k, epochs, progress))
    return callbacks, nan, backup


def progress_callback(k, epochs, progress: Progress):
    """A Keras callback that reports each epoch's beginning, batches and end to ``progress``."""

    class EpochEvents(k.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()
            progress(EpochBegin(epoch=epoch + 1, epochs=epochs, steps=self.params.get("steps")))

        def on_train_batch_end(self, batch, logs=None):
            progress(BatchEnd(step=batch + 1, metrics=_floats(logs)))

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.start
            progress(EpochEnd(epoch=epoch + 1, epochs=epochs, metrics=_floats(logs), seconds=seconds))

    return EpochEvents()


def _floats(logs) -> dict[str, float]:
    return {key: float(value) for key, value in (logs or {}).items()}


def compile_classifier(model, optimizer) -> None:
    """Compile ``model`` for integer labels (sparse categorical cross-entropy, top-1), and make the optimizer's and
    the metrics' variables now: Keras makes them inside its first training step otherwise, and TensorFlow traces a
    step that creates variables twice (1.5 s more for the tiny preset, 4 s with pruning wrappers)."""
    from devices.tfkeras import tensorflow

    tf = tensorflow()
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    build_optimizer(model.optimizer, model.trainable_variables)
    predicted, labels = tf.zeros([1, model.outputs[0].shape[-1]]), tf.zeros([1], tf.int32)
    model.compiled_loss.build(predicted)
    model.compiled_metrics.build(predicted, labels)


def build_optimizer(optimizer, variables) -> None:
    """The optimizer's slots for ``variables``, made before a traced step uses it (a loss-scaling one's inside)."""
    getattr(optimizer, "inner_optimizer", optimizer).build(variables)


def say_grouped_path(model, progress: Progress | None) -> None:
    """Before a model with grouped convolutions (1 < groups) trains, one line on the kernel they train on and why
    (``devices.tfkeras.grouped_convolution_path``): it sets how long training takes."""
    if progress is None:
        return
    from devices.tensorflow import grouped_convolutions

    if grouped_convolutions(model):
        from devices.tfkeras import grouped_convolution_path

        progress(Note(grouped_convolution_path().describe()))


def starting_model(config):
    """(model, Starting) for --from, else None (after checking --weights, before any data is loaded)."""
    if config.from_model is None:
        from edgex.training.weights import check_weights_spec

        check_weights_spec(config.weights, config.model_config(2), config.preset)
        return None
    from edgex.training.transfer import inspect_classifier

    return inspect_classifier(config.from_model)


def run_dataset(config, start):
    from edgex.data import load_dataset
    from edgex.models import preset_config

    if start is not None:
        size = start[1].input_size
    else:  # the dataset is loaded at the preset's input size, known before the number of classes
        size = config.model.get("input_size") or preset_config(config.preset).input_size
    return load_dataset(config.data, size, val_split=config.val_split, seed=config.seed, strict=config.strict)


def run_preprocessing(config, start):
    """--preprocessing, else the --from model's recorded one, else Xception's; --from without either is an error."""
    from devices.preprocess import chosen_preprocessing

    if start is None:
        return chosen_preprocessing(config.preprocessing, XCEPTION, "")
    return chosen_preprocessing(config.preprocessing, start[1].metadata.preprocessing, f"--from {start[1].path}")


def initial_model(config, start, dataset):
    """(model, its XceptionConfig or None for --from, a report of the starting weights: a WeightsReport, a
    FromModelReport, or None from scratch)."""
    if start is not None:
        from edgex.training.transfer import FromModelReport, with_head

        model, replaced = with_head(start[0], dataset.classes)
        return model, None, FromModelReport(start[1].path, head_replaced=replaced, classes_before=start[1].classes)
    from edgex.models import build_xception
    from edgex.training.weights import load_starting_weights

    model_config = config.model_config(dataset.classes)
    model = build_xception(model_config)
    report = load_starting_weights(model, config.weights, model_config, config.preset, dataset.class_names)
    return model, model_config, report


@dataclass(frozen=True)
class RunInputs:
    """The data a run trains on, prepared once for every phase."""

    dataset: object
    preprocessing: object
    train: object  # tf.data, repeated
    val: object
    steps: int  # optimizer steps per epoch

    @classmethod
    def of(cls, config, dataset, preprocessing) -> RunInputs:
        from devices.tfkeras import tensorflow

        tf = tensorflow()
        train_ds = dataset.train.tf_dataset(
            config.batch_size, preprocessing, shuffle=True, augment=config.augment, seed=config.seed, repeat=True
        )
        val_ds = dataset.val.tf_dataset(max(config.batch_size, 128), preprocessing)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        steps = max(1, len(dataset.train) // config.batch_size)
        return cls(
            dataset=dataset,
            preprocessing=preprocessing,
            train=train_ds.with_options(options),
            val=val_ds.with_options(options),
            steps=steps,
        )


def run_metadata(config, model_config, inputs, model, *, epochs, phases, weights, metrics, bn) -> ArtifactMetadata:
    """The saved model's metadata: its inputs and classes, what it was built and trained from, what it measured."""
    size = int(model.inputs[0].shape[1])
    return ArtifactMetadata(
        created=utc_now(),
        input_shape=(size, size, 3),
        class_names=tuple(inputs.dataset.class_names),
        preprocessing=inputs.preprocessing,
        dataset=inputs.dataset.record(),
        model_config=model_config.to_dict() if model_config else None,
        preset=None if config.from_model else config.preset,
        weights=weights,
        seed=config.seed,
        epochs=epochs,
        params=int(model.count_params()),
        phases=tuple(phases),
        metrics=metrics,
        versions=versions(),
        sections={"train_config": config.to_dict(), "bn_statistics": bn or None},
    )


def val_metrics(model, val_ds) -> tuple[float, float]:
    """Top-1 and mean cross-entropy of the saved model on the validation split."""
    import numpy as np

    correct = total = 0
    loss = 0.0
    for x, y in val_ds:
        probs = np.asarray(model(x, training=False), dtype=np.float64)
        y = np.asarray(y)
        correct += int((probs.argmax(-1) == y).sum())
        loss += float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)).sum())
        total += len(y)
    return correct / max(total, 1), loss / max(total, 1)


def chance_notes(hist: dict, val_top1: float, classes: int, bn_recomputed: bool) -> list[str]:
    """One line when the model learned its training batches but is at chance on validation."""
    train_top1 = (hist.get("accuracy") or [float("nan")])[-1]
    chance = 1.0 / classes
    if not (train_top1 >= 0.9 and val_top1 <= chance + 0.15 * (1 - chance)):
        return []
    cause = (
        "the validation images likely differ from the training ones (other sources, classes or sizes), or the "
        "model memorized too few images: add images, use --augment crop,flip, or start from pretrained --weights"
        if bn_recomputed
        else "BatchNormalization's moving statistics likely did not settle in so few steps: train more epochs"
    )
    return [f"training accuracy {train_top1:.0%} but validation {val_top1:.0%} (chance {chance:.0%}): {cause}"]
