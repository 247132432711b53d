"""Training Xception with Keras: checkpoint every epoch, resume after a crash, stop cleanly on NaN,
deterministic with a seed, and scale out with ``tf.distribute``. From scratch, or from pretrained weights
(``weights``) or another Keras classifier (``from_model``) with the two phases of fine-tuning."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from devices.errors import EdgexError, EnvironmentFault
from devices.files import atomic_path, faults_named, write_json_atomic
from devices.metadata import TrainingMetrics, read_metadata, write_metadata
from devices.preprocess import XCEPTION
from edgex.progress import Note, PhaseBegin, Progress, WeightsLoaded
from edgex.training import steps
from edgex.training.config import OPTIMIZERS as OPTIMIZERS
from edgex.training.config import PRECISIONS as PRECISIONS
from edgex.training.config import RECIPE_TRANSFER_KEYS as RECIPE_TRANSFER_KEYS
from edgex.training.config import STRATEGIES as STRATEGIES
from edgex.training.config import TrainConfig
from edgex.training.config import transfer_options as transfer_options
from edgex.training.transfer import Phase

MODEL_FILE = "model.keras"
CHECKPOINT_DIR = "checkpoints"
RUN_FILE = "train_run.json"
PHASE_DONE_FILE = "finished_phase.h5"  # the weights a finished phase hands to the next one (kept for --resume)
HEAD_PHASE_FILE = "head_phase.json"  # what a finished head phase recorded (its features, epochs, best epoch)
BN_RECOMPUTE_SAMPLES = 1024
BN_RECOMPUTE_GAIN = 0.01  # recomputed BatchNormalization statistics are kept when validation top-1 gains this much


class TrainingDiverged(EdgexError):
    exit_code = 1


@dataclass(frozen=True)
class TrainResult:
    model_path: str
    epochs: int  # epochs in the finished model (both phases of a fine-tuning)
    resumed_from_epoch: int  # 0 for a fresh run
    val_top1: float
    val_loss: float
    history: dict
    seconds: float
    params: int
    already_done: bool = False
    phases: tuple = ()  # Phase.to_dict() of each phase, with the blocks that trained
    weights: dict | None = None  # to_dict() of the WeightsReport of --weights, or of the FromModelReport of --from
    notes: tuple[str, ...] = ()  # things the user should know about the result, one line each


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


def changed_options(out_dir: str | Path, config: TrainConfig) -> dict | None:
    """{option: (before, now)} for the options that differ from the run recorded in ``out_dir``; None when no run
    is recorded there. Options added since that run count as their default."""
    run_file = Path(out_dir) / RUN_FILE
    if not run_file.is_file():
        return None
    previous = json.loads(run_file.read_text())
    defaults = TrainConfig().to_dict()
    return {
        k: (previous.get(k, defaults.get(k)), v)
        for k, v in config.to_dict().items()
        if previous.get(k, defaults.get(k)) != v
    }


@dataclass(frozen=True)
class _Run:
    """Where a run keeps its files."""

    out_dir: Path
    phases: tuple[Phase, ...]

    @property
    def model_path(self) -> Path:
        return self.out_dir / MODEL_FILE

    @property
    def checkpoints(self) -> Path:
        return self.out_dir / CHECKPOINT_DIR

    def phase_dir(self, phase: Phase) -> Path:
        return self.checkpoints if len(self.phases) == 1 else self.checkpoints / f"phase{phase.number}"

    def epochs_done(self) -> int:
        """Finished epochs of an interrupted run, over all its phases."""
        done = 0
        for phase in self.phases:
            finished = self.finished_epochs(phase)
            if finished is None:
                return done + _checkpoint_epoch(self.phase_dir(phase))
            done += finished
        return done

    def finished_epochs(self, phase: Phase) -> int | None:
        """The epochs a finished phase of an interrupted run trained (the head phase stops early); None when the
        phase did not finish."""
        if len(self.phases) == 1 or not (self.phase_dir(phase) / PHASE_DONE_FILE).is_file():
            return None
        return len(steps.read_epoch_history(self.phase_dir(phase))) or phase.epochs


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a model from ``config`` into ``out_dir`` (``model.keras`` + ``model.keras.json``).

    ``resume`` continues an interrupted run from its last finished epoch (in the phase it stopped in); ``force``
    starts over. ``progress`` receives the run's events (``edgex.progress``): where the weights came from, a note on
    grouped convolutions, and each phase, epoch and batch (for progress bars).
    """
    from devices.tfkeras import keras, tensorflow
    from edgex.training.distribute import strategy_named
    from edgex.training.transfer import set_trainable

    run = _run_folder(out_dir, config)
    done = _check_previous_run(run, config, resume, force)
    if done is not None:
        return done
    resumed_from = run.epochs_done() if resume else 0
    if not resume:
        shutil.rmtree(run.checkpoints, ignore_errors=True)
    tf, k = tensorflow(), keras()
    strategy = strategy_named(config.strategy)
    try:
        k.utils.set_random_seed(config.seed)
        tf.config.experimental.enable_op_determinism()
        k.mixed_precision.set_global_policy(config.precision)
        with strategy.scope():
            start = steps.starting_model(config)
            preprocessing = steps.run_preprocessing(config, start)
            dataset = steps.run_dataset(config, start)
            run.out_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run.out_dir / RUN_FILE, config.to_dict())
            model, model_config, start_report = steps.initial_model(config, start, dataset)
            bn = _recompute_before_fine_tuning(model, config, dataset, preprocessing) if config.recompute_bn else {}
        for phase in run.phases:  # an impossible --unfreeze fails before any epoch runs
            set_trainable(model, phase)
        weights = start_report.to_dict() if start_report else None
        if progress is not None and start_report:
            progress(WeightsLoaded(start_report))
        steps.say_grouped_path(model, progress)
        inputs = steps.RunInputs.of(config, dataset, preprocessing)
        began = time.perf_counter()
        records, phases = _run_phases(model, config, inputs, run, strategy, resume, progress)
        seconds = time.perf_counter() - began
        return _finish(model, model_config, config, run, inputs, records, phases, weights, seconds, resumed_from, bn)
    finally:
        k.mixed_precision.set_global_policy("float32")


@contextlib.contextmanager
def _checkpoint_faults(folder: Path):
    """Keras writes a checkpoint every epoch, into NAME_temp/ then renamed: a failed write (a full disk) names the
    checkpoint folder, and leaves no partial checkpoint behind."""
    try:
        with faults_named(folder):
            yield
    except EnvironmentFault:
        for partial in folder.rglob("*_temp"):
            shutil.rmtree(partial, ignore_errors=True)
        raise


def _run_folder(out_dir: str | Path, config: TrainConfig) -> _Run:
    from edgex.training.distribute import is_chief

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgexError(f"--out {out_dir} is a file; training writes a folder (model.keras, checkpoints)")
    chief, task_index = is_chief()
    if not chief:  # other workers write to their own folder so that they never race the chief
        out_dir = out_dir / f"worker-{task_index}"
    return _Run(out_dir, config.phases())


def _check_previous_run(run: _Run, config: TrainConfig, resume: bool, force: bool) -> TrainResult | None:
    """Refuse to overwrite or to resume with other options; the finished result when there is nothing to resume."""
    if resume and (run.out_dir / RUN_FILE).is_file():
        changed = changed_options(run.out_dir, config)
        if changed:
            what = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise EdgexError(
                f"--resume with different options than the interrupted run ({what}); "
                "use the same options, or --force to start over"
            )
    model_path = run.model_path
    if model_path.exists() and not (resume or force):
        raise EdgexError(f"{model_path} already exists; pass --resume to continue or --force to train again")
    interrupted_at = run.epochs_done()
    if resume and model_path.exists() and interrupted_at == 0:
        meta = read_metadata(model_path)
        metrics = meta.metrics or TrainingMetrics(val_top1=0.0, val_loss=0.0)
        return TrainResult(
            model_path=str(model_path),
            epochs=meta.epochs or 0,
            resumed_from_epoch=0,
            val_top1=metrics.val_top1,
            val_loss=metrics.val_loss,
            history=metrics.history,
            seconds=0.0,
            params=meta.params or 0,
            already_done=True,
            phases=meta.phases,
        )
    if interrupted_at and not (resume or force):
        total = sum(run.finished_epochs(p) or p.epochs for p in run.phases)
        raise EdgexError(
            f"{run.out_dir} holds an interrupted run ({interrupted_at} of {total} epochs done); "
            "pass --resume to continue it or --force to start over"
        )
    return None


def _run_phases(model, config, inputs: steps.RunInputs, run: _Run, strategy, resume, progress):
    """Every phase in turn: (each epoch's metrics, each phase's record). A fine-tuning's backbone features are
    checked before its first epoch."""
    from edgex.training import head

    checked = None
    if config.pretrained and run.phases[0].name != "head":  # --head-epochs 0: nothing else computes them
        with strategy.scope():
            sampled = head.sampled_features_check(model, inputs.dataset, inputs.preprocessing, config.seed)
        checked = _checked_features(sampled, progress)
    records, phases = [], []
    for phase in run.phases:
        fit = _fit_head_phase if phase.name == "head" else _fit_phase
        with _checkpoint_faults(run.checkpoints):
            epochs, details = fit(model, phase, config, inputs, run, strategy, resume, progress)
        records += [{**e, "phase": phase.number} if len(run.phases) > 1 else e for e in epochs]
        phases.append({**phase.to_dict(), **details})
    if checked is not None:
        phases[0]["features"] = checked
    return records, phases


def _checked_features(described: dict, progress) -> dict:
    """The features' description, shown with a warning when they barely vary across the training images."""
    from edgex.training.head import features_line

    if progress is not None:
        progress(Note(features_line(described)))
    _warn_if_dead(described, progress)
    return described


def _warn_if_dead(described: dict, progress) -> None:
    from edgex.training.head import dead_features_line

    line = dead_features_line(described)
    if line and progress is not None:
        progress(Note(line, warning=True))


def _fit_head_phase(model, phase: Phase, config, inputs: steps.RunInputs, run: _Run, strategy, resume, progress):
    """Phase 1 of a fine-tuning: the head alone, trained on backbone features computed once (or the saved result
    of a resumed run that had finished it); returns its epochs' metrics and its record."""
    from edgex.training import head
    from edgex.training.transfer import set_trainable

    folder = run.phase_dir(phase)
    finished = folder / PHASE_DONE_FILE
    set_trainable(model, phase)
    if resume and finished.is_file():
        model.load_weights(str(finished))
        record = json.loads((folder / HEAD_PHASE_FILE).read_text())
        _warn_if_dead(record["features"], progress)
        return steps.read_epoch_history(folder), record
    if progress is not None:
        progress(PhaseBegin(number=phase.number, phases=len(run.phases), text=phase.describe(), blocks=()))
    with strategy.scope():
        features = head.cache_features(model, inputs.dataset, inputs.preprocessing)
    described = _checked_features(features.describe(), progress)
    fit = head.fit_head(
        model, features, max_epochs=phase.epochs, lr=phase.lr, batch_size=config.batch_size, seed=config.seed
    )
    record = {
        "blocks": [],
        "features": described,
        "epochs_run": len(fit.history),
        "best_epoch": fit.best_epoch,
        "val_top1": fit.val_top1,
        "fit_seconds": fit.seconds,
    }
    if progress is not None:
        progress(Note(head.head_line(record)))
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / steps.HISTORY_FILE, fit.history)
    write_json_atomic(folder / HEAD_PHASE_FILE, record)
    with atomic_path(finished, overwrite=True) as tmp:  # last: the phase counts as finished once this exists
        model.save_weights(str(tmp))
    return fit.history, record


def _fit_phase(model, phase: Phase, config, inputs: steps.RunInputs, run: _Run, strategy, resume, progress):
    """Train one phase (or take its saved result when a resumed run had finished it); returns its epochs' metrics
    and its record (the blocks that trained)."""
    from edgex.training.transfer import set_trainable

    folder = run.phase_dir(phase)
    blocks = set_trainable(model, phase)
    finished = folder / PHASE_DONE_FILE
    if resume and len(run.phases) > 1 and finished.is_file():
        model.load_weights(str(finished))
        return steps.read_epoch_history(folder), {"blocks": blocks}
    if progress is not None:
        progress(PhaseBegin(number=phase.number, phases=len(run.phases), text=phase.describe(), blocks=tuple(blocks)))
    with strategy.scope():
        steps.compile_classifier(model, _optimizer(replace(config, epochs=phase.epochs, lr=phase.lr), inputs.steps))
    callbacks, nan_guard, backup = steps.epoch_callbacks(progress, folder, phase.epochs)
    history = model.fit(
        inputs.train,
        validation_data=inputs.val,
        epochs=phase.epochs,
        steps_per_epoch=inputs.steps,
        callbacks=callbacks,
        verbose=0,
    )
    _raise_if_diverged(nan_guard, backup, folder, run.model_path)
    # Every epoch of the phase, those before a resume included (BackupAndRestore's history has only the last part).
    epochs = steps.read_epoch_history(folder) or [
        {key: float(values[i]) for key, values in history.history.items()} for i in range(len(history.epoch))
    ]
    if len(run.phases) > 1 and phase is not run.phases[-1]:
        with atomic_path(finished, overwrite=True) as tmp:
            model.save_weights(str(tmp))
    return epochs, {"blocks": blocks}


def _raise_if_diverged(nan_guard, backup, backup_dir: Path, model_path: Path) -> None:
    if nan_guard.where is None and not backup.diverged:
        return
    epoch, batch = nan_guard.where or (None, None)
    where = f" at epoch {epoch}, batch {batch}" if epoch else ""
    kept = f"; the checkpoint of the last good epoch is kept in {backup_dir}" if backup_dir.exists() else ""
    existing = f"; {model_path} was not touched" if model_path.exists() else ""
    raise TrainingDiverged(
        f"training diverged: the loss became NaN{where}{kept}{existing}. Lower --lr or check the data"
    )


def _settle_bn_statistics(model, config, inputs, records) -> dict:
    """Recompute BatchNormalization's moving statistics on training images, and keep them when the validation top-1
    gains at least BN_RECOMPUTE_GAIN: after a few dozen steps the moving averages (momentum 0.99) still hold their
    initial values and the saved model is broken, while a longer run's statistics have settled and stay as trained
    (recomputed ones can move the model's int8 quantization, measured, for no gain)."""
    before = records[-1].get("val_accuracy", float("nan")) if records else float("nan")
    return settle_bn_statistics(model, inputs.dataset, inputs.preprocessing, val_top1(inputs.val), config.seed, before)


def val_top1(val) -> Callable:
    """The top-1 of a model on a validation tf.data set, for settle_bn_statistics."""
    return lambda model: steps.val_metrics(model, val)[0]


def settle_bn_statistics(model, dataset, preprocessing, top1: Callable, seed: int, before: float) -> dict:
    """``_settle_bn_statistics`` for any Keras classifier: ``top1(model)`` its validation top-1, ``before`` that
    of the weights as trained (NaN when unknown)."""
    trained = model.get_weights()
    count = _recompute_on_train_images(model, dataset, preprocessing, seed)
    after = top1(model)
    kept = not before >= after - BN_RECOMPUTE_GAIN  # a NaN before (no validation) keeps them
    if not kept:
        model.set_weights(trained)
    return {"recomputed_on_train_images": count, "val_top1_before": before, "val_top1_after": after, "kept": kept}


def _recompute_before_fine_tuning(model, config, dataset, preprocessing) -> dict:
    """--recompute-bn: the backbone's BatchNormalization statistics recomputed on the training images before the
    first phase (moving statistics that never converged give every image the same features)."""
    from edgex.training.transfer import unfreeze_all

    unfreeze_all(model)  # recompute_bn_statistics leaves frozen layers alone; each phase sets its own
    count = _recompute_on_train_images(model, dataset, preprocessing, config.seed)
    if not count:
        raise EdgexError("--recompute-bn: this model has no BatchNormalization layer")
    return {"recomputed_on_train_images": count, "before_fine_tuning": True}


def _recompute_on_train_images(model, dataset, preprocessing, seed: int) -> int:
    from edgex.training.transfer import recompute_bn_statistics

    images, _ = dataset.train.take(BN_RECOMPUTE_SAMPLES, seed=seed).arrays()
    return recompute_bn_statistics(model, images, preprocessing)


def _finish(
    model, model_config, config, run, inputs, records, phases, weights, seconds, resumed_from, bn
) -> TrainResult:
    """Settle BatchNormalization statistics after training from scratch, measure, save model and metadata.
    ``bn``: what --recompute-bn did before a fine-tuning."""
    from edgex.training.head import dead_features_line
    from edgex.training.transfer import unfreeze_all

    if config.precision != "float32":
        model = _as_float32(model, model_config)
    saved = without_optimizer(model)
    if run.phases[0].name == "train":
        bn = _settle_bn_statistics(saved, config, inputs, records)
    unfreeze_all(saved)
    val_top1, val_loss = steps.val_metrics(saved, inputs.val)
    hist = {key: [r.get(key, float("nan")) for r in records] for key in records[-1]} if records else {}
    notes = steps.chance_notes(hist, val_top1, inputs.dataset.classes, bool(bn))
    dead = dead_features_line(phases[0]["features"]) if "features" in phases[0] else None
    notes = [dead, *notes] if dead else notes
    epochs = len(records)  # the head phase stops early
    with atomic_path(run.model_path, overwrite=True) as tmp:
        saved.save(tmp)  # the epoch checkpoints hold the optimizer for resuming
    metrics = TrainingMetrics(val_top1=val_top1, val_loss=val_loss, history=hist, train_seconds=seconds)
    meta = steps.run_metadata(
        config, model_config, inputs, saved, epochs=epochs, phases=phases, weights=weights, metrics=metrics, bn=bn
    )
    write_metadata(run.model_path, meta)
    shutil.rmtree(run.checkpoints, ignore_errors=True)  # the finished model supersedes the epoch checkpoints
    return TrainResult(
        model_path=str(run.model_path),
        epochs=epochs,
        resumed_from_epoch=resumed_from,
        val_top1=val_top1,
        val_loss=val_loss,
        history=hist,
        seconds=seconds,
        params=int(saved.count_params()),
        phases=tuple(phases),
        weights=weights,
        notes=tuple(notes),
    )


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
    progress: Progress | None = None,
) -> dict:
    """Fine-tune a Keras model (QAT- or pruning-wrapped) on a dataset's train split; returns the history.
    ``progress`` receives a note on grouped convolutions and each epoch and batch (``edgex.progress``)."""
    from devices.tensorflow import native_grouped_convolutions
    from devices.tfkeras import keras

    k = keras()
    if epochs < 1:
        raise EdgexError(f"fine-tuning needs at least 1 epoch, got {epochs}")
    k.utils.set_random_seed(seed)
    native_grouped_convolutions(model)  # tfmot's QAT and pruning wrappers clone the layers
    steps_per_fit = steps_per_epoch(dataset, batch_size)
    train_ds = dataset.train.tf_dataset(batch_size, XCEPTION, shuffle=True, augment=augment, seed=seed, repeat=True)
    val_ds = dataset.val.tf_dataset(128, XCEPTION)
    steps.compile_classifier(model, k.optimizers.Adam(k.optimizers.schedules.CosineDecay(lr, steps_per_fit * epochs)))
    all_callbacks = list(callbacks)
    steps.say_grouped_path(model, progress)
    if progress is not None:
        all_callbacks.append(steps.progress_callback(k, epochs, progress))
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        steps_per_epoch=steps_per_fit,
        callbacks=all_callbacks,
        verbose=0,
    )
    return {name: [float(v) for v in values] for name, values in history.history.items()}


def steps_per_epoch(dataset, batch_size: int = 32) -> int:
    return max(1, len(dataset.train) // batch_size)
