"""Training Xception with Keras: checkpoint every epoch, resume after a crash, stop cleanly on NaN,
deterministic with a seed, and scale out with ``tf.distribute``."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devices.errors import EdgexError, choice_error
from devices.files import atomic_path, read_metadata, utc_now, write_json_atomic, write_metadata
from devices.preprocess import XCEPTION
from devices.sysinfo import versions

OPTIMIZERS = ("adam", "paper")
STRATEGIES = ("auto", "one-device", "mirrored", "multi-worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
MODEL_FILE = "model.keras"
CHECKPOINT_DIR = "checkpoints"
RUN_FILE = "train_run.json"
HISTORY_FILE = "history.json"


class TrainingDiverged(EdgexError):
    exit_code = 1


@dataclass(frozen=True)
class TrainConfig:
    data: str = "digits"  # digits, an image folder, or tfds:NAME
    preset: str = "mini"
    model: dict = field(default_factory=dict)  # overrides of the preset (conv, width, middle_blocks, ...)
    epochs: int = 20
    batch_size: int = 32  # global batch, split across replicas
    optimizer: str = "adam"  # adam, or paper: SGD momentum 0.9, lr 0.045 x 0.94 every 2 epochs, wd 1e-5, dropout 0.5
    lr: float | None = None  # adam: 2e-3 with cosine decay; paper: 0.045
    seed: int = 0
    val_split: float = 0.2
    augment: tuple[str, ...] = ("crop",)
    strategy: str = "auto"
    precision: str = "float32"
    strict: bool = False  # unreadable images are an error instead of being skipped

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise choice_error("optimizer", self.optimizer, OPTIMIZERS)
        if self.strategy not in STRATEGIES:
            raise choice_error("strategy", self.strategy, STRATEGIES)
        if self.precision not in PRECISIONS:
            raise choice_error("precision", self.precision, PRECISIONS)
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise EdgexError(f"epochs must be a positive integer, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise EdgexError(f"batch size must be a positive integer, got {self.batch_size!r}")
        if self.lr is not None and not (0 < self.lr < 10):
            raise EdgexError(f"learning rate must be in (0, 10), got {self.lr}")
        from edgex.data import AUGMENTATIONS

        for a in self.augment:
            if a not in AUGMENTATIONS:
                raise choice_error("augmentation", a, AUGMENTATIONS)

    def model_config(self, classes: int):
        from edgex.models import preset_config

        overrides = dict(self.model)
        overrides["classes"] = classes
        if self.optimizer == "paper" and overrides.get("dropout") is None:
            overrides["dropout"] = 0.5
        return preset_config(self.preset, **overrides)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["augment"] = list(self.augment)
        return data


@dataclass(frozen=True)
class TrainResult:
    model_path: str
    epochs: int  # epochs in the finished model
    resumed_from_epoch: int  # 0 for a fresh run
    val_top1: float
    val_loss: float
    history: dict
    seconds: float
    params: int
    already_done: bool = False


def _strategy(name: str):
    from devices.tfkeras import tensorflow

    tf = tensorflow()
    if name == "multi-worker":
        if not os.environ.get("TF_CONFIG"):
            raise EdgexError(
                "--strategy multi-worker needs TF_CONFIG (cluster and task) in the environment; "
                "see the README section on multi-worker training"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "one-device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def _tf_config() -> dict:
    text = os.environ.get("TF_CONFIG") or "{}"
    try:
        tf_config = json.loads(text)
    except ValueError as exc:
        raise EdgexError(
            f"TF_CONFIG is not valid JSON ({exc}): {text[:80]!r}; expected "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'
        ) from None
    if not isinstance(tf_config, dict) or not isinstance(tf_config.get("task", {}), dict):
        raise EdgexError(f"TF_CONFIG must be an object with 'cluster' and 'task' objects, got {text[:80]!r}")
    return tf_config


def _is_chief() -> tuple[bool, int]:
    tf_config = _tf_config()
    task = tf_config.get("task", {})
    if not task:
        return True, 0
    is_chief = task.get("type") == "chief" or (
        task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in tf_config.get("cluster", {})
    )
    index = task.get("index", 0)
    if not isinstance(index, int) or index < 0:
        raise EdgexError(f"TF_CONFIG task index must be a whole number >= 0, got {index!r}")
    return is_chief, index


def _optimizer(config: TrainConfig, steps_per_epoch: int):
    from devices.tfkeras import keras

    k = keras()
    total = steps_per_epoch * config.epochs
    if config.optimizer == "paper":
        lr = k.optimizers.schedules.ExponentialDecay(
            config.lr or 0.045, decay_steps=2 * steps_per_epoch, decay_rate=0.94, staircase=True
        )
        return k.optimizers.SGD(learning_rate=lr, momentum=0.9, weight_decay=1e-5)
    return k.optimizers.Adam(learning_rate=k.optimizers.schedules.CosineDecay(config.lr or 2e-3, total))


def _callbacks(progress, backup_dir: Path, epochs: int):
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
        callbacks.append(_progress_callback(k, epochs, progress))
    return callbacks, nan, backup


def _progress_callback(k, epochs, progress):
    class Progress(k.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()
            progress("epoch_begin", epoch=epoch + 1, epochs=epochs, steps=self.params.get("steps"))

        def on_train_batch_end(self, batch, logs=None):
            progress("batch", step=batch + 1, logs=logs or {})

        def on_epoch_end(self, epoch, logs=None):
            progress(
                "epoch_end", epoch=epoch + 1, epochs=epochs, logs=logs or {}, seconds=time.perf_counter() - self.start
            )

    return Progress()


def changed_options(out_dir: str | Path, config: TrainConfig) -> dict | None:
    """{option: (before, now)} for the options that differ from the run recorded in ``out_dir``; None when no run
    is recorded there."""
    run_file = Path(out_dir) / RUN_FILE
    if not run_file.is_file():
        return None
    previous = json.loads(run_file.read_text())
    return {k: (previous.get(k), v) for k, v in config.to_dict().items() if previous.get(k) != v}


def train(
    config: TrainConfig, out_dir: str | Path, *, resume: bool = False, force: bool = False, progress=None
) -> TrainResult:
    """Train a model from ``config`` into ``out_dir`` (``model.keras`` + ``model.keras.json``).

    ``resume`` continues an interrupted run from its last finished epoch; ``force`` starts over.
    ``progress(event, **info)`` receives epoch and batch events (for progress bars).
    """
    from devices.tfkeras import keras, tensorflow
    from edgex.data import load_dataset
    from edgex.models import build_xception

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgexError(f"--out {out_dir} is a file; training writes a folder (model.keras, checkpoints)")
    is_chief, task_index = _is_chief()
    if not is_chief:  # other workers write to their own folder so that they never race the chief
        out_dir = out_dir / f"worker-{task_index}"
    model_path = out_dir / MODEL_FILE
    backup_dir = out_dir / CHECKPOINT_DIR
    run_file = out_dir / RUN_FILE
    wanted = config.to_dict()

    if resume and run_file.is_file():
        changed = changed_options(out_dir, config)
        if changed:
            what = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise EdgexError(
                f"--resume with different options than the interrupted run ({what}); "
                "use the same options, or --force to start over"
            )
    if model_path.exists() and not (resume or force):
        raise EdgexError(f"{model_path} already exists; pass --resume to continue or --force to train again")
    if resume and model_path.exists() and _checkpoint_epoch(backup_dir) == 0:
        meta = read_metadata(model_path)
        metrics = meta.get("metrics", {})
        return TrainResult(
            str(model_path),
            meta.get("epochs", 0),
            0,
            metrics.get("val_top1", 0.0),
            metrics.get("val_loss", 0.0),
            metrics.get("history", {}),
            0.0,
            meta.get("params", 0),
            already_done=True,
        )
    interrupted_at = _checkpoint_epoch(backup_dir)
    if interrupted_at and not (resume or force):
        raise EdgexError(
            f"{out_dir} holds an interrupted run ({interrupted_at} of {config.epochs} epochs done); "
            "pass --resume to continue it or --force to start over"
        )
    resumed_from = interrupted_at if resume else 0
    if not resume:
        shutil.rmtree(backup_dir, ignore_errors=True)

    tf = tensorflow()
    k = keras()
    strategy = _strategy(config.strategy)
    model_config = None
    dataset = None
    try:
        k.utils.set_random_seed(config.seed)
        tf.config.experimental.enable_op_determinism()
        k.mixed_precision.set_global_policy(config.precision)
        # The dataset is loaded at the preset's input size, known before the number of classes.
        from edgex.models import preset_config

        size = config.model.get("input_size") or preset_config(config.preset).input_size
        dataset = load_dataset(config.data, size, val_split=config.val_split, seed=config.seed, strict=config.strict)
        model_config = config.model_config(dataset.classes)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_file, wanted)

        steps = max(1, len(dataset.train) // config.batch_size)
        train_ds = dataset.train.tf_dataset(
            config.batch_size, XCEPTION, shuffle=True, augment=config.augment, seed=config.seed, repeat=True
        )
        val_ds = dataset.val.tf_dataset(max(config.batch_size, 128), XCEPTION)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        train_ds, val_ds = train_ds.with_options(options), val_ds.with_options(options)
        with strategy.scope():
            model = build_xception(model_config)
            model.compile(
                optimizer=_optimizer(config, steps), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
            )
        callbacks, nan_guard, backup = _callbacks(progress, backup_dir, config.epochs)
        start = time.perf_counter()
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=0,
        )
        seconds = time.perf_counter() - start
        if nan_guard.where is not None or backup.diverged:
            epoch, batch = nan_guard.where or (None, None)
            where = f" at epoch {epoch}, batch {batch}" if epoch else ""
            kept = f"; the checkpoint of the last good epoch is kept in {backup_dir}" if backup_dir.exists() else ""
            existing = f"; {model_path} was not touched" if model_path.exists() else ""
            raise TrainingDiverged(
                f"training diverged: the loss became NaN{where}{kept}{existing}. Lower --lr or check the data"
            )
        # Every epoch of the run, those before a resume included (BackupAndRestore's history has only the last part).
        epochs_done = read_epoch_history(backup_dir)
        hist = (
            {key: [e.get(key, float("nan")) for e in epochs_done] for key in epochs_done[-1]}
            if epochs_done
            else {k_: [float(v) for v in vals] for k_, vals in history.history.items()}
        )
        if config.precision != "float32":
            model = _as_float32(model, model_config)
        with atomic_path(model_path, overwrite=True) as tmp:
            without_optimizer(model).save(tmp)  # the epoch checkpoints hold the optimizer for resuming
        val_top1 = hist.get("val_accuracy", [float("nan")])[-1]
        val_loss = hist.get("val_loss", [float("nan")])[-1]
        write_metadata(
            model_path,
            {
                "kind": "keras",
                "created": utc_now(),
                "class_names": list(dataset.class_names),
                "input_shape": [model_config.input_size, model_config.input_size, 3],
                "preprocessing": XCEPTION.to_dict(),
                "preset": config.preset,
                "model_config": model_config.to_dict(),
                "train_config": wanted,
                "dataset": dataset.describe(),
                "seed": config.seed,
                "epochs": config.epochs,
                "params": int(model.count_params()),
                "metrics": {"val_top1": val_top1, "val_loss": val_loss, "history": hist, "train_seconds": seconds},
                "versions": versions(),
            },
        )
        shutil.rmtree(backup_dir, ignore_errors=True)  # the finished model supersedes the epoch checkpoints
        return TrainResult(
            str(model_path), config.epochs, resumed_from, val_top1, val_loss, hist, seconds, int(model.count_params())
        )
    finally:
        k.mixed_precision.set_global_policy("float32")


def without_optimizer(model):
    """An uncompiled copy of a model with the same weights: the file then holds the model, not Adam's slots."""
    from devices.tfkeras import keras

    clone = keras().models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _as_float32(model, model_config):
    """A float32 copy of a mixed-precision model (variables are float32 already; the layers' dtypes change)."""
    from devices.tfkeras import keras
    from edgex.models import build_xception

    keras().mixed_precision.set_global_policy("float32")
    clone = build_xception(model_config)
    clone.set_weights(model.get_weights())
    return clone


def read_epoch_history(backup_dir: Path) -> list[dict]:
    """The metrics of every finished epoch of the run checkpointed in ``backup_dir``."""
    path = Path(backup_dir) / HISTORY_FILE
    try:
        return list(json.loads(path.read_text())) if path.is_file() else []
    except ValueError:
        return []


def _checkpoint_epoch(backup_dir: Path) -> int:
    """The number of finished epochs in a BackupAndRestore folder (0 when there is none)."""
    if not backup_dir.exists():
        return 0
    try:
        from devices.tfkeras import tensorflow

        tf = tensorflow()
        latest = tf.train.latest_checkpoint(str(backup_dir / "chief")) or tf.train.latest_checkpoint(str(backup_dir))
        if not latest:
            return 0
        reader = tf.train.load_checkpoint(latest)
        for key in reader.get_variable_to_shape_map():
            if key.split("/")[0].lstrip("_") == "ckpt_saved_epoch":
                return int(reader.get_tensor(key)) + 1
    except Exception:
        return 0
    return 0


def fine_tune(
    model,
    dataset,
    *,
    epochs: int,
    lr: float = 1e-4,
    batch_size: int = 32,
    seed: int = 0,
    augment: tuple[str, ...] = ("crop",),
    callbacks=(),
    progress=None,
) -> dict:
    """Fine-tune a Keras model (QAT- or pruning-wrapped) on a dataset's train split; returns the history."""
    from devices.tfkeras import keras

    k = keras()
    if epochs < 1:
        raise EdgexError(f"fine-tuning needs at least 1 epoch, got {epochs}")
    k.utils.set_random_seed(seed)
    steps = steps_per_epoch(dataset, batch_size)
    train_ds = dataset.train.tf_dataset(batch_size, XCEPTION, shuffle=True, augment=augment, seed=seed, repeat=True)
    val_ds = dataset.val.tf_dataset(128, XCEPTION)
    model.compile(
        optimizer=k.optimizers.Adam(k.optimizers.schedules.CosineDecay(lr, steps * epochs)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    all_callbacks = list(callbacks)
    if progress is not None:
        all_callbacks.append(_progress_callback(k, epochs, progress))
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=epochs, steps_per_epoch=steps, callbacks=all_callbacks, verbose=0
    )
    return {name: [float(v) for v in values] for name, values in history.history.items()}


def steps_per_epoch(dataset, batch_size: int = 32) -> int:
    return max(1, len(dataset.train) // batch_size)
