"""``edgex tune`` as a library function: prepare the model and its data, open (or resume) the study, search within
the budget, then check and write the winner."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from devices.errors import EdgexError
from devices.files import write_json_atomic
from edgex.tune.config import TuneConfig
from edgex.tune.results import CandidateRecord, TuneResult

STATE_FILE = "tune_state.json"  # the search's seconds so far: a resumed search gets what is left of its budget
FINISH_SHARE = 0.1  # of the budget kept for the winner's checks


def tune(
    model: str | Path, config: TuneConfig, out: str | Path = "runs/tune", *, resume=False, force=False, progress=None
) -> TuneResult:
    """Search for the fastest artifact of ``model`` within ``config.max_drop`` points of its top-1; see TuneConfig.
    ``progress`` receives a Note (edgex.progress) per finished step."""
    from edgex.tune.search import SameKindHalving, Search, open_study
    from edgex.tune.subject import Subject
    from edgex.tune.workshop import Workshop

    say = _say(progress)
    model, out = Path(model), Path(out)
    _check_folder(out, config, resume, force)
    device = _device(config)
    subject = Subject(model, config, config.data)
    _start_folder(out, config, force)
    say(
        f"{model.name}: top-1 {100 * subject.float_selection:.2f}% on the selection split, "
        f"{100 * subject.float_heldout:.2f}% held out; gate {config.max_drop:g} points"
    )
    space = _space(subject, device, config)
    halving = SameKindHalving(len(subject.at_size(subject.input_size).selection), subject.float_selection)
    study = open_study(config, out, _subject_key(model, subject), create=not resume, pruner=halving)
    started, spent = time.time(), _spent(out)
    search_s = config.budget_s * (1 - FINISH_SHARE) - spent
    search = Search(study, subject, Workshop(subject, out), device, space, started + search_s, say)
    if not resume:
        search.enqueue_cheap_first()
    if search_s > 0:
        _optimize(study, search, search_s, config.max_trials, out, spent, started)
    return _finish(study, subject, device, space, config, out, spent + time.time() - started, say)


def _say(progress):
    """One line for the progress receiver, as a Note."""
    from edgex.progress import Note

    return (lambda text: None) if progress is None else (lambda text: progress(Note(text)))


def _check_folder(out: Path, config: TuneConfig, resume: bool, force: bool) -> None:
    state = out / STATE_FILE
    if state.is_file() and not (resume or force) and config.storage is None:
        raise EdgexError(f"{out} holds a tune already; pass --resume to go on with it or --force to start over")
    if resume and not state.is_file() and config.storage is None:
        raise EdgexError(f"nothing to resume in {out}: no tune was started there")
    if out.exists() and not out.is_dir():
        raise EdgexError(f"--out {out} is a file; a tune writes a folder")


def _start_folder(out: Path, config: TuneConfig, force: bool) -> None:
    """A fresh run folder (--force empties the one edgex made), with the search's state."""
    state = out / STATE_FILE
    if force and state.is_file():
        for name in ("tune.db", STATE_FILE, "tune.json", "tune.md", "pareto.png"):
            (out / name).unlink(missing_ok=True)
        for folder in ("networks", "artifacts", "winner"):
            shutil.rmtree(out / folder, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    if not state.is_file():
        write_json_atomic(state, {"spent_s": 0.0, "config": config.to_dict()})


def _spent(out: Path) -> float:
    return float(json.loads((out / STATE_FILE).read_text()).get("spent_s", 0.0))


def _optimize(study, search, seconds: float, trials: int | None, out: Path, spent: float, started: float) -> None:
    from edgex.tune.search import CandidateFailed, DeviceLost

    def account(study, trial) -> None:
        state = json.loads((out / STATE_FILE).read_text())
        write_json_atomic(out / STATE_FILE, {**state, "spent_s": spent + time.time() - started})

    try:
        study.optimize(
            search, n_trials=trials, timeout=seconds, catch=(CandidateFailed,), callbacks=[account], gc_after_trial=True
        )
    except DeviceLost as exc:
        done = sum(t.state.name == "COMPLETE" for t in study.trials)
        raise DeviceLost(
            f"{exc}; the search stopped with {done} finished candidates kept in {out}: --resume goes on"
        ) from exc


def _device(config: TuneConfig):
    from devices.registry import parse_device
    from edgex.tune.latency import LocalDevice

    if config.ssh:
        from edgex.deploy.remote import SshOptions
        from edgex.tune.remote import SshDevice

        opts = SshOptions(config=config.ssh_config)
        return SshDevice(config.ssh, opts=opts, remote_dir=config.remote_dir, python=config.remote_python)
    parse_device(config.device)
    return LocalDevice(config.device)


def _space(subject, device, config: TuneConfig):
    from edgex.tune.space import Space

    runtimes = config.runtimes or _runtimes_for(config.device)
    threads = config.threads or tuple(range(1, device.cores + 1))
    keep = (1, 2, 4) if config.layer_errors else ()
    levers = config.levers if subject.config is not None else ()
    return Space(config=subject.config, levers=levers, runtimes=runtimes, threads=threads, keep_float=keep)


def _runtimes_for(device: str) -> tuple[str, ...]:
    """The runtimes that run a candidate on a device, the Edge TPU only when one is present."""
    from devices.registry import parse_device

    kind, _ = parse_device(device)
    if kind == "edgetpu":
        return ("edgetpu",)
    if kind == "cpu":
        return ("litert", "onnxruntime")
    return ("onnxruntime",)


def _final(device, subject, records, incumbent, space, notes):
    """(winner, threads, its p50 per thread count): a final interleaved round of the finalists on a local device; a
    board only sweeps the incumbent's thread counts."""
    from edgex.tune import finish

    if not hasattr(device, "runs"):
        return (incumbent, *finish.fastest_threads(device, incumbent, space.threads))
    chosen = finish.finalists(subject, records, incumbent, notes)
    return finish.final_round(device, chosen, space.threads)


def _board(config: TuneConfig, device) -> str | None:
    """The deploy target of the winner's bundle: --target, else with --ssh the generic one of the board's CPU."""
    if config.target or not config.ssh:
        return config.target
    machine = device.identity["environment"].get("machine", "")
    return "generic-x86_64" if machine in ("x86_64", "amd64") else "generic-arm64"


def _subject_key(model: Path, subject) -> dict:
    """What a study tunes: a study that tunes something else is not resumed or shared."""
    from devices.files import sha256_file

    tune = subject.tune
    return {
        "model": sha256_file(model),
        "data": subject.data,
        "device": tune.ssh or tune.device,
        "max_drop": tune.max_drop,
        "levers": list(tune.levers),
    }


def _finish(study, subject, device, space, config: TuneConfig, out: Path, seconds: float, say) -> TuneResult:
    from edgex.tune import finish
    from edgex.tune.report import write_tune_files

    records = {t.number: CandidateRecord.of(t) for t in study.trials if t.state.name != "WAITING"}  # started ones
    notes: list[str] = []
    incumbent = finish.held_out_winner(study, subject, records, notes)
    winner = None
    if incumbent is not None:
        incumbent, threads, sweep = _final(device, subject, records, incumbent, space, notes)
        default = finish.default_artifact(records)
        versus = finish.versus_default(device, default, incumbent, threads)
        record = records[incumbent.trial]
        extra = {"threads": threads, "runtime": incumbent.runtime, "options": dict(incumbent.options),
                 "selection_top1": record.selection_top1, "heldout_top1": record.heldout_top1}  # fmt: skip
        path = finish.write_winner(out, incumbent, record, extra)
        winner = finish.winner_of(incumbent, record, path, threads, sweep, versus)
        winner = finish.with_bundle(winner, _board(config, device), subject.data)
        say(f"winner: trial {winner.trial}, {versus.get('line', '')}")
    default_p50 = finish.default_latencies(records)
    result = TuneResult(
        model=str(subject.model_path),
        data=subject.data,
        device=config.ssh or config.device,
        max_drop=config.max_drop,
        budget_s=config.budget_s,
        seconds=seconds,
        float_selection=subject.float_selection,
        float_heldout=subject.float_heldout,
        selection_samples=len(subject.at_size(subject.input_size).selection),
        heldout_samples=len(subject.at_size(subject.input_size).heldout),
        winner=winner,
        candidates=tuple(records.values()),
        levers=finish.lever_table(list(records.values()), default_p50),
        notes=tuple(notes),
    )
    return write_tune_files(result, out)
