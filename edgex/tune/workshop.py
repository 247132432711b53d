"""Where a search's candidates are made and kept: the changed networks (trained from the model as their teacher)
and their exported artifacts, each made once per run folder and reused by every trial that asks for it (a file
that exists is finished: every write is atomic)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devices.files import atomic_path
from devices.metadata import read_metadata, write_metadata
from edgex.tune.distill import BudgetSpent, DistillConfig, distill, teacher_targets
from edgex.tune.space import Deployment
from edgex.tune.surgery import NetworkChange, apply_change

FINE_TUNE_LR = 1e-3  # a network that kept the model's weights: nudged, not retrained
STUDENT_LR = 3e-3  # a student trained from scratch by distillation (the rate train() uses for presets)
# A student starts from scratch: it gets this many times the epochs of a network that kept the model's weights (on
# the digits, width-1/2 mini students ended 1-3 selection samples short of the gate after 24 epochs).
STUDENT_EPOCHS = 3
GOOD_ENOUGH = 0.5  # a network stops training once its drop is this share of the gate (the rest for quantization)
CALIBRATION = 100  # int8 calibration samples, as `edgex quantize` uses
PARITY = 64  # parity samples of a candidate's export (every export is still checked against its network)


@dataclass(frozen=True)
class Network:
    """A changed network, trained and saved: what its artifacts are exported from."""

    key: str  # what changed (NetworkChange.key): its folder's name
    path: Path  # model.keras, with its metadata
    input_size: int
    selection_top1: float  # of the Keras model, on the selection split
    epochs: int  # epochs it trained (0: the model itself)


class Workshop:
    """Makes and keeps the networks and artifacts of one run folder."""

    def __init__(self, subject, out: Path):
        self.subject = subject  # edgex.tune.subject.Subject: the model, its data and splits
        self.out = out

    def network(
        self, change: NetworkChange, after_rung: Callable[[int, float], bool], deadline: float | None = None
    ) -> Network:
        """The changed network, trained (or found made by an earlier trial). ``after_rung(epochs, drop)`` says
        whether its training goes on; at ``deadline`` (time.time()) training stops with BudgetSpent."""
        subject = self.subject
        key = change.key(subject.config)
        if change.is_identity:
            return Network(
                key=key, path=subject.model_path, input_size=subject.input_size,
                selection_top1=subject.float_selection, epochs=0,
            )  # fmt: skip
        path = self.out / "networks" / key / "model.keras"
        if path.is_file():
            record = read_metadata(path).sections["tune"]
            return Network(key=key, path=path, input_size=record["input_size"],
                           selection_top1=record["selection_top1"], epochs=record["epochs"])  # fmt: skip
        return self._train(change, path, after_rung, deadline)

    def training_cost(self, change: NetworkChange) -> float:
        """What training a changed network costs, relatively: its multiply-accumulates times its epochs."""
        from edgex.models.costs import model_cost

        model, _ = apply_change(self.subject.teacher, self.subject.config, change)
        return model_cost(model).macs * (1 if change.keeps_weights else STUDENT_EPOCHS)

    def untrained_artifact(self, change: NetworkChange, deployment: Deployment) -> Path:
        """The changed network before training, exported for a deployment: for a latency check (its weights do not
        change its speed)."""
        folder = self.out / "networks" / change.key(self.subject.config)
        path = folder / "untrained.keras"
        if not path.is_file():
            model, config = apply_change(self.subject.teacher, self.subject.config, change)
            _save(model, path, self.subject.network_metadata(config, {"untrained": True}))
        untrained = Network(
            key=f"{folder.name}-untrained", path=path, input_size=0, selection_top1=float("nan"), epochs=0
        )
        return self.artifact(untrained, deployment)

    def _train(self, change: NetworkChange, path: Path, after_rung, deadline: float | None) -> Network:
        subject = self.subject
        model, config = apply_change(subject.teacher, subject.config, change)
        data = subject.at_size(config.input_size)
        epochs = self.subject.tune.max_epochs * (1 if change.keeps_weights else STUDENT_EPOCHS)
        lr = FINE_TUNE_LR if change.keeps_weights else STUDENT_LR
        top1, rungs, started = {}, _rungs(epochs), time.time()

        def rung(done: int, student) -> bool:
            top1[done] = self._settled_top1(student, data)
            drop = 100 * (subject.float_selection - top1[done])
            if drop <= GOOD_ENOUGH * subject.tune.max_drop:
                return False
            if not next_rung_fits(done, rungs, started, time.time(), deadline):
                if drop <= subject.tune.max_drop:
                    return False  # within the gate, and the next rung would end past the budget: kept as it is
                raise BudgetSpent(f"{drop:.1f} points below the model after {done} epochs; the next rung would end "
                                  "past the budget")  # fmt: skip
            return after_rung(done, drop)

        config_ = DistillConfig(epochs=epochs, lr=lr, seed=subject.tune.seed, deadline=deadline)
        targets = self.teacher_targets(data.dataset) if change.keeps_weights else None
        done = distill(model, subject.teacher, data.dataset, subject.preprocessing, config_, rungs, rung, targets)
        record = {
            "change": change.key(subject.config),
            "input_size": config.input_size,
            "selection_top1": top1[done],
            "epochs": done,
            "seconds": time.time() - started,
        }
        _save(model, path, subject.network_metadata(config, record))
        return Network(key=change.key(subject.config), path=path, input_size=config.input_size,
                       selection_top1=top1[done], epochs=done)  # fmt: skip

    def teacher_targets(self, dataset):
        """The model's outputs on the training images (at its own input size), computed once per run folder: the
        targets of every network that kept its weights. ``dataset``: the data at that network's size, whose
        training split must list the same images in the same order."""
        import numpy as np

        own = self.subject.at_size(self.subject.input_size).dataset
        if not np.array_equal(own.train.labels, dataset.train.labels):
            raise RuntimeError("the training split differs between input sizes")  # data layer invariant
        path = self.out / "networks" / f"teacher-targets-{own.fingerprint[:16]}.npy"
        if not path.is_file():
            targets = teacher_targets(self.subject.teacher, own, self.subject.preprocessing)
            with atomic_path(path, overwrite=True) as tmp, open(tmp, "wb") as file:
                np.save(file, targets)
        return np.load(path)

    def _settled_top1(self, student, data) -> float:
        """The selection top-1 of a network in training, with BatchNormalization's statistics recomputed on training
        images when that scores higher: the moving averages lag the weights (one epoch of a 144 px paper network
        read 52% with them, 92% recomputed), and would stop or prolong its training for nothing."""
        from functools import partial

        from edgex.training.trainer import settle_bn_statistics

        subject = self.subject
        top1 = partial(subject.keras_top1, split=data.selection)
        as_trained = top1(student)
        bn = settle_bn_statistics(student, data.dataset, subject.preprocessing, top1, subject.tune.seed, as_trained)
        return bn["val_top1_after"] if bn["kept"] else as_trained

    def artifact(self, network: Network, deployment: Deployment, layer_errors: Callable | None = None) -> Path:
        """The network exported for a deployment (threads and runtime options do not change the file)."""
        from edgex.artifacts.convert import export_model

        folder = self.out / "artifacts" / network.key
        suffix = "" if deployment.format == "saved-model" else ".onnx" if deployment.format == "onnx" else ".tflite"
        path = folder / f"{deployment.artifact_key}{suffix}"
        if path.is_file():
            return path
        keep = layer_errors(network)[: deployment.keep_float] if deployment.keep_float else ()
        export_model(
            network.path,
            deployment.format,
            deployment.precision,
            data=self.subject.data,
            calib_samples=CALIBRATION,
            parity_samples=PARITY,
            out=path,
            force=True,
            keep_float=tuple(keep),
        )
        return path


def next_rung_fits(done: int, rungs: tuple[int, ...], started: float, now: float, deadline: float | None) -> bool:
    """Whether the rung after ``done`` epochs would end by ``deadline``, at the pace of the epochs so far (their
    rung checks included)."""
    following = min((r for r in rungs if r > done), default=None)
    if deadline is None or following is None:
        return True
    return now + (following - done) * (now - started) / done <= deadline


def _rungs(epochs: int) -> tuple[int, ...]:
    """Successive halving's rungs: 1, 2, 4, ... epochs, and the last."""
    rungs, epoch = [], 1
    while epoch < epochs:
        rungs.append(epoch)
        epoch *= 2
    return (*rungs, epochs)


def _save(model, path: Path, metadata: dict) -> None:
    """The metadata first, then the model: a model file that exists always has its record (a run killed between
    the two trains the network again)."""
    from edgex.training.trainer import without_optimizer

    write_metadata(path, metadata)
    with atomic_path(path, overwrite=True) as tmp:
        without_optimizer(model).save(tmp)
