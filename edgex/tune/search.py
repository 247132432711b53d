"""The search itself: an Optuna study that minimizes latency under the accuracy gate (each trial sets its drop
against the gate as a constraint, which Optuna's TPE sampler honours), stored in SQLite in the run folder (or any
storage URL several workers share), with heartbeats so that a trial whose process was killed is failed and tried
again when the search resumes.

A trial pulls levers (suggest), gets its network (trained once, in rungs of epochs that Optuna's successive-
halving pruner may stop), exports it, measures its top-1 on the selection split through its own runtime, then
runs an interleaved A/B against the incumbent: it becomes the incumbent only when it passes the gate and the
ratio's interval clears the noise margin. A network that is not faster than the incumbent before training, in the
incumbent's deployment, is not trained at all; one that is trained is then also measured in that deployment.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from devices.errors import EdgexError
from edgex.tune.distill import BudgetSpent
from edgex.tune.latency import Placed
from edgex.tune.space import LEVER_PARAMS, Candidate, Deployment, Space, cheap_first, strongest_changes, suggest

STUDY_NAME = "edgex-tune"
HEARTBEAT_S = 10  # a running trial's heartbeat; one silent for GRACE_S was killed and is failed (and retried)
GRACE_S = 30


class CandidateFailed(EdgexError):
    """A candidate could not be made or measured: recorded with its reason; the search goes on."""


class DeviceLost(EdgexError):
    """The device measuring latency went away: the search stops with what it finished (--resume goes on)."""

    exit_code = 1


@dataclass(frozen=True)
class Incumbent:
    """The fastest candidate so far that passed the gate."""

    trial: int
    path: str
    runtime: str
    options: tuple[tuple[str, object], ...]
    threads: int
    p50_ms: float

    @property
    def placed(self) -> Placed:
        return Placed(Path(self.path), self.runtime, self.options)

    @classmethod
    def from_dict(cls, data: dict) -> Incumbent:
        return cls(**{**data, "options": tuple((k, v) for k, v in data["options"])})


def open_study(tune, out: Path, subject_key: dict, create: bool, pruner=None):
    """The study of this run folder (or of ``tune.storage``); refused when it tunes something else."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = tune.storage or f"sqlite:///{out / 'tune.db'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since 2.8
        storage = RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
        )
    shared = tune.storage is not None
    sampler = optuna.samplers.TPESampler(seed=tune.seed + (os.getpid() if shared else 0), n_startup_trials=8)
    study = optuna.create_study(
        study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=pruner or SameKindHalving(),
        direction="minimize", load_if_exists=True,
    )  # fmt: skip
    recorded = study.user_attrs.get("subject")
    if recorded is None:
        study.set_user_attr("subject", subject_key)
    elif recorded != subject_key:
        what = ", ".join(f"{k}: {recorded.get(k)!r} -> {v!r}" for k, v in subject_key.items() if recorded.get(k) != v)
        raise EdgexError(f"the study in {url} tunes something else ({what}); use another --out or --storage")
    return study


class SameKindHalving:
    """Successive halving (Jamieson and Talwalkar 2016) among trainings of one kind: at each rung a training goes
    on only if its drop is among the best half of those that reached the rung before it, or behind them by less
    than the selection split can tell apart (one standard error of a top-1 there: on 181 images, two students at
    94% differ by less than noise unless 1.8 points apart). A network that kept the model's weights starts near its
    accuracy, a student from scratch far below: each is compared with its kind."""

    reduction_factor = 2
    min_epochs = 2  # the first epoch of a changed network says too little to stop it

    def __init__(self, selection_samples: int = 0, model_top1: float = 1.0):
        self.selection_samples, self.model_top1 = selection_samples, model_top1  # of the selection split

    def prune(self, study, trial) -> bool:
        from optuna.trial import TrialState

        if not trial.intermediate_values or max(trial.intermediate_values) < self.min_epochs:
            return False
        step = max(trial.intermediate_values)
        kind = trial.user_attrs.get("training")
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        others = [
            t.intermediate_values[step]
            for t in study.get_trials(deepcopy=False, states=states)
            if t.number != trial.number and t.user_attrs.get("training") == kind and step in t.intermediate_values
        ]
        ranked = sorted([*others, trial.intermediate_values[step]])
        cut = ranked[max(1, len(ranked) // self.reduction_factor) - 1]
        return trial.intermediate_values[step] > cut + self.noise_points(cut)

    def noise_points(self, drop: float) -> float:
        """One standard error, in points, of a top-1 that is ``drop`` points below the model's on the split."""
        if not self.selection_samples:
            return 0.0
        top1 = min(1.0, max(0.0, self.model_top1 - drop / 100))
        return 100 * (top1 * (1 - top1) / self.selection_samples) ** 0.5


class Search:
    """The objective of the study: one call evaluates one trial."""

    def __init__(self, study, subject, workshop, device, space: Space, deadline: float, progress=None):
        self.study, self.subject, self.workshop, self.device = study, subject, workshop, device
        self.space, self.deadline = space, deadline
        self.say = progress or (lambda text: None)
        self._layer_errors: dict[str, list[str]] = {}

    def enqueue_cheap_first(self) -> None:
        """The deployment knobs on the unchanged network first; then each lever's strongest change on its own, the
        cheapest to train first (a network at least as slow as the incumbent then is not trained at all, and one
        within the gate makes every slower change's check a cheap one); the sampler combines levers after them."""
        from optuna.trial import FixedTrial

        deployments = cheap_first(self.space)
        default = _deployment_params(deployments[0])
        changes = [{**params, **default} for params in strongest_changes(self.space)]
        changes.sort(key=lambda params: self.workshop.training_cost(suggest(FixedTrial(params), self.space).network))
        for params in deployments + changes:
            self.study.enqueue_trial(params, skip_if_exists=True)

    def __call__(self, trial) -> float:
        import optuna

        candidate = suggest(trial, self.space)
        trial.set_user_attr("network", asdict(candidate.network))
        trial.set_user_attr("deployment", candidate.deployment.to_dict())
        try:
            self._skip_repeats(trial)
            return self._evaluate(trial, candidate)
        except optuna.TrialPruned as pruned:
            trial.set_user_attr("reason", str(pruned))
            self.say(f"trial {trial.number} pruned: {pruned}")
            raise
        except (DeviceLost, KeyboardInterrupt):
            raise
        except Exception as exc:  # a failed conversion or fine-tune is this candidate's, not the search's
            reason = _first_line(exc)
            trial.set_user_attr("reason", reason)
            self.say(f"trial {trial.number} failed: {reason}")
            raise CandidateFailed(reason) from exc

    def _skip_repeats(self, trial) -> None:
        """A candidate measured already (the sampler may ask again) is not measured twice."""
        import optuna
        from optuna.trial import TrialState

        for earlier in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if earlier.params == trial.params:
                raise optuna.TrialPruned(f"repeats trial {earlier.number}")

    def _evaluate(self, trial, candidate: Candidate) -> float:
        from devices.files import file_size

        tune, subject = self.subject.tune, self.subject
        what = f"{self._describe(candidate)}"
        network = self._network(trial, candidate)
        path = self.workshop.artifact(network, candidate.deployment, self.layer_errors)
        data = subject.at_size(network.input_size)
        top1 = subject.artifact_top1(path, data.selection, candidate.deployment.load_options)
        drop = 100 * (subject.float_selection - top1)
        trial.set_user_attr("artifact", str(path))
        trial.set_user_attr("size_bytes", file_size(path))
        trial.set_user_attr("selection_top1", top1)
        trial.set_user_attr("drop_points", drop)
        trial.set_constraint("drop_over_gate", drop - tune.max_drop)
        placed = Placed(path, candidate.deployment.runtime, tuple(candidate.deployment.load_options.items()))
        p50 = self._against_incumbent(trial, placed, candidate, feasible=drop <= tune.max_drop)
        gate = "passes" if drop <= tune.max_drop else "fails"
        self.say(f"trial {trial.number}: {what}: top-1 {100 * top1:.2f}% ({drop:+.2f} points, {gate}), {p50:.3f} ms")
        return p50

    def _describe(self, candidate: Candidate) -> str:
        config = self.subject.config
        network = candidate.network.describe(config) if config is not None else "unchanged network"
        return f"{network}; {candidate.deployment.describe()}"

    # -- networks ---------------------------------------------------------------------------------------------
    def _network(self, trial, candidate: Candidate):
        import optuna

        change = candidate.network
        key = change.key(self.subject.config)
        stopped = (self.study.user_attrs.get("stopped_networks") or {}).get(key)
        if stopped:  # its training was stopped for falling behind: it is not trained again
            raise optuna.TrialPruned(f"its network was stopped in trial {stopped}")
        new = not change.is_identity and not self._made(change)
        if new:
            self._check_speed_before_training(trial, candidate)
            trial.set_user_attr("training", "fine-tune" if change.keeps_weights else "student")

        def after_rung(epochs: int, drop: float) -> bool:
            trial.report(drop, epochs)
            if time.time() > self.deadline:
                raise optuna.TrialPruned(f"the budget ran out after {epochs} epochs of training")
            if trial.should_prune():
                stopped = dict(self.study.user_attrs.get("stopped_networks") or {})
                self.study.set_user_attr("stopped_networks", {**stopped, key: trial.number})
                raise optuna.TrialPruned(f"{drop:.1f} points below the model after {epochs} epochs: behind the rest")
            return True

        try:
            network = self.workshop.network(change, after_rung, self.deadline)
        except BudgetSpent as spent:  # a rung of a large network can outlast the budget: it stops mid-rung
            raise optuna.TrialPruned(str(spent)) from spent
        if new:
            self._enqueue_in_incumbents_deployment(trial)
        return network

    def _made(self, change) -> bool:
        return (self.workshop.out / "networks" / change.key(self.subject.config) / "model.keras").is_file()

    def _check_speed_before_training(self, trial, candidate: Candidate) -> None:
        """Prune a network that is not faster than the incumbent in the incumbent's own deployment (its weights do
        not change its speed, and the deployment the sampler paired it with would judge a runtime option, not the
        network): no training is spent on it. Kept-float layers are left out: they need the trained weights."""
        import optuna

        incumbent = self.incumbent()
        if incumbent is None:
            return
        deployment = replace(self._incumbent_deployment(incumbent), keep_float=0)
        path = self.workshop.untrained_artifact(candidate.network, deployment)
        ratio = self._ab(incumbent.placed, Placed(path, incumbent.runtime, incumbent.options), incumbent.threads)
        trial.set_user_attr("untrained_ratio", [ratio.ratio, *ratio.ci95])
        if not ratio.b_is_faster:
            raise optuna.TrialPruned(
                f"not faster than trial {incumbent.trial} before training, in its deployment "
                f"(ratio {ratio.ratio:.2f} [{ratio.ci95[0]:.2f}, {ratio.ci95[1]:.2f}])"
            )

    def _enqueue_in_incumbents_deployment(self, trial) -> None:
        """A network just trained is measured next in the incumbent's deployment too: the one the sampler paired it
        with may be a poor one, and the network would then never count."""
        incumbent = self.incumbent()
        if incumbent is None:
            return
        deployment = _deployment_params(self._trial(incumbent.trial).params)
        own = _deployment_params(trial.params)
        params = {**deployment, **{k: v for k, v in trial.params.items() if k not in own}}
        if params != trial.params:
            self.study.enqueue_trial(params, skip_if_exists=True)

    def _trial(self, number: int):
        return next(t for t in self.study.get_trials(deepcopy=False) if t.number == number)

    def _incumbent_deployment(self, incumbent: Incumbent) -> Deployment:
        return Deployment.from_dict(self._trial(incumbent.trial).user_attrs["deployment"])

    def layer_errors(self, network) -> list[str]:
        """The network's layers, most sensitive to int8 first (TFLite's QuantizationDebugger)."""
        if network.key not in self._layer_errors:
            from converters.source import load_source
            from converters.tflite import quantization_errors

            data = self.subject.at_size(network.input_size).dataset
            images, _ = data.train.take(100, seed=0).arrays()
            errors = quantization_errors(load_source(network.path), self.subject.preprocessing.apply(images))
            self._layer_errors[network.key] = list(dict.fromkeys(e.layer for e in errors if e.layer))
        return self._layer_errors[network.key]

    # -- latency ----------------------------------------------------------------------------------------------
    def incumbent(self) -> Incumbent | None:
        chain = self.study.user_attrs.get("incumbents") or []
        return Incumbent.from_dict(chain[-1]) if chain else None

    def _ab(self, incumbent: Placed, candidate: Placed, threads: int):
        try:
            return self.device.ab(incumbent, candidate, threads)
        except DeviceLost:
            raise
        except EdgexError:
            raise
        except OSError as exc:
            raise DeviceLost(f"{self.device.name}: {_first_line(exc)}") from exc

    def _against_incumbent(self, trial, placed: Placed, candidate: Candidate, feasible: bool) -> float:
        threads = candidate.deployment.threads
        incumbent = self.incumbent()
        if incumbent is None:
            result = self.device.alone(placed, threads)
            p50, ci95 = result.latency.p50, result.latency.median_ci95
        else:
            ratio = self._ab(incumbent.placed, placed, threads)
            p50, ci95 = ratio.b.latency.p50, ratio.b.latency.median_ci95
            trial.set_user_attr("against", {"trial": incumbent.trial, **ratio.to_dict()})
            feasible = feasible and ratio.b_is_faster
        trial.set_user_attr("p50_ms", p50)
        trial.set_user_attr("p50_ci95", list(ci95))
        if feasible:
            self._crown(trial, placed, threads, p50)
        return p50

    def _crown(self, trial, placed: Placed, threads: int, p50: float) -> None:
        record = Incumbent(trial=trial.number, path=str(placed.path), runtime=placed.runtime, options=placed.options,
                           threads=threads, p50_ms=p50)  # fmt: skip
        chain = list(self.study.user_attrs.get("incumbents") or [])
        self.study.set_user_attr("incumbents", [*chain, {**asdict(record), "options": list(record.options)}])
        trial.set_user_attr("incumbent", True)
        self.say(f"trial {trial.number} is the new incumbent: {p50:.3f} ms")


def _deployment_params(params: dict) -> dict:
    """A trial's parameters without its network levers: how it is deployed."""
    levers = set(LEVER_PARAMS.values())
    return {k: v for k, v in params.items() if k not in levers}


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]
