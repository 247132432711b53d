"""After the search: the winner re-checked on the held-out split, its thread count chosen by an interleaved sweep,
its speed against the default int8 artifact measured interleaved at that thread count, and its files written."""

from __future__ import annotations

import shutil
from pathlib import Path

from devices.files import atomic_path
from devices.metadata import read_metadata, write_metadata
from edgex.tune.latency import Placed
from edgex.tune.results import CandidateRecord, LeverRow, Winner
from edgex.tune.search import Incumbent
from edgex.tune.surgery import NetworkChange

DEFAULT_KEY = {"runtime": "litert", "precision": "int8", "keep_float": 0, "options": {}}  # `edgex quantize`'s
FINALISTS = 4  # candidates beside the incumbent timed against it at every thread count at the end


def held_out_winner(study, subject, records: dict[int, CandidateRecord], notes: list[str]):
    """The newest incumbent that also passes the gate on the held-out split, checked newest first; with the
    records of those checked updated. None when every incumbent fails it."""
    from dataclasses import replace

    chain = [Incumbent.from_dict(i) for i in study.user_attrs.get("incumbents") or []]
    for incumbent in reversed(chain):
        record = records[incumbent.trial]
        size = subject.at_size(_input_size(record, subject)).heldout
        top1 = subject.artifact_top1(Path(incumbent.path), size, dict(incumbent.options))
        records[incumbent.trial] = replace(record, heldout_top1=top1)
        drop = 100 * (subject.float_heldout - top1)
        if drop <= subject.tune.max_drop:
            return incumbent
        notes.append(
            f"trial {incumbent.trial} passed on the selection split but not on the held-out one "
            f"({drop:.2f} points below the model, gate {subject.tune.max_drop:g}): the previous incumbent is checked"
        )
    return None


def _input_size(record: CandidateRecord, subject) -> int:
    return record.network.get("input_size") or subject.input_size


def fastest_threads(device, incumbent: Incumbent, threads: tuple[int, ...]) -> tuple[int, dict]:
    """The winner at every thread count the search offered: the fastest count, and each p50."""
    p50 = device.threads_sweep(incumbent.placed, threads)
    return (min(p50, key=p50.get) if p50 else incumbent.threads), p50


def _as_incumbent(record: CandidateRecord) -> Incumbent:
    from edgex.tune.space import Deployment

    deployment = Deployment.from_dict(record.deployment)
    return Incumbent(
        trial=record.number,
        path=record.artifact,
        runtime=deployment.runtime,
        options=tuple(deployment.load_options.items()),
        threads=deployment.threads,
        p50_ms=record.p50_ms,
    )


def finalists(subject, records: dict[int, CandidateRecord], incumbent: Incumbent, notes: list[str]) -> list:
    """The held-out winner and the FINALISTS fastest other candidates that passed the gate (one per file and runtime
    options), those that also pass it on the held-out split. The incumbent won its A/B at the thread count of its
    trial; another candidate may be faster at another count."""
    from dataclasses import replace

    chosen, seen = [incumbent], {(incumbent.path, incumbent.options)}
    for record in sorted((r for r in records.values() if r.passes and r.p50_ms), key=lambda r: r.p50_ms):
        candidate = _as_incumbent(record)
        if len(chosen) > FINALISTS or (candidate.path, candidate.options) in seen:
            continue
        seen.add((candidate.path, candidate.options))
        top1 = subject.artifact_top1(Path(candidate.path), subject.at_size(_input_size(record, subject)).heldout,
                                     dict(candidate.options))  # fmt: skip
        records[record.number] = replace(record, heldout_top1=top1)
        if 100 * (subject.float_heldout - top1) <= subject.tune.max_drop:
            chosen.append(candidate)
        else:
            notes.append(f"finalist trial {record.number} failed the held-out check ({100 * top1:.2f}%)")
    return chosen


def final_round(device, chosen: list, threads: tuple[int, ...]) -> tuple[Incumbent, int, dict]:
    """(the winner, its threads, its p50 per thread count): the incumbent at its fastest thread count is the best so
    far; each finalist at each thread count then runs an interleaved A/B against the best so far (two models in one
    process, each at its own count: eight interleaved at once slow each other down unevenly), and replaces it only
    when the ratio's interval clears the noise margin."""
    incumbent = chosen[0]
    count, sweep = fastest_threads(device, incumbent, threads)
    best, best_count, best_sweep = incumbent, count, sweep
    for finalist in chosen[1:]:
        for count in threads:
            runs = device.runs([best.placed, finalist.placed], [best_count, count])
            if runs.ratio(0, 1).b_is_faster:
                best, best_count = finalist, count
                best_sweep = {count: runs.results[1].latency.p50}
    return best, best_count, best_sweep


def versus_default(device, default: Path | None, incumbent: Incumbent, threads: int) -> dict:
    """The default int8 artifact against the winner, interleaved at the winner's threads: above 1, the winner is
    faster by that factor."""
    if default is None:
        return {}
    ratio = device.ab(Placed(default, "litert"), incumbent.placed, threads)
    line = ratio.describe("default", "winner")
    return {"artifact": str(default), "threads": threads, **ratio.to_dict(), "line": line}


def _is_default(record: CandidateRecord) -> bool:
    """The unchanged model in int8 LiteRT with default options, as `edgex quantize --mode int8` makes it."""
    network = NetworkChange(**record.network) if record.network else NetworkChange()
    return network.is_identity and {k: record.deployment.get(k) for k in DEFAULT_KEY} == DEFAULT_KEY


def default_artifact(records: dict[int, CandidateRecord]) -> Path | None:
    """The default int8 artifact (the search's first trial makes it)."""
    for record in records.values():
        if _is_default(record) and record.artifact and Path(record.artifact).is_file():
            return Path(record.artifact)
    return None


def default_latencies(records: dict[int, CandidateRecord]) -> dict[int, float]:
    """threads -> the default int8 artifact's p50 measured in the search."""
    return {
        r.deployment["threads"]: r.p50_ms
        for r in records.values()
        if r.status == "done" and r.p50_ms is not None and _is_default(r)
    }


def write_winner(out: Path, incumbent: Incumbent, record: CandidateRecord, extra: dict) -> Path:
    """The winner's artifact and metadata copied to out/winner/, its metadata saying how to run it."""
    source = Path(incumbent.path)
    target = out / "winner" / f"model_{record.deployment['precision']}{source.suffix}"
    with atomic_path(target, overwrite=True) as tmp:
        shutil.copyfile(source, tmp)
    write_metadata(target, read_metadata(source).with_sections(tune=extra))
    return target


def winner_of(incumbent: Incumbent, record: CandidateRecord, path: Path, threads: int, sweep, versus) -> Winner:
    return Winner(
        trial=incumbent.trial,
        artifact=str(path),
        runtime=incumbent.runtime,
        precision=record.deployment["precision"],
        threads=threads,
        options=dict(incumbent.options),
        network=record.network,
        selection_top1=record.selection_top1,
        heldout_top1=record.heldout_top1,
        p50_ms=sweep.get(threads, incumbent.p50_ms),
        versus_default=versus,
        threads_sweep={str(t): p for t, p in sweep.items()},
    )


def lever_table(records: list[CandidateRecord], default_p50: dict[int, float]) -> tuple[LeverRow, ...]:
    """Per lever and setting: how many candidates used it, how many passed, and the fastest that passed, against
    the default int8 artifact's p50 at the same threads."""
    settings: dict[tuple[str, str], list[CandidateRecord]] = {}
    for record in records:
        for lever, setting in _settings(record):
            settings.setdefault((lever, setting), []).append(record)
    tried: dict[str, set] = {}
    for lever, setting in settings:
        tried.setdefault(lever, set()).add(setting)
    moved = {key: used for key, used in settings.items() if len(tried[key[0]]) > 1}  # one setting compares nothing
    rows = []
    for (lever, setting), used in moved.items():
        passing = [r for r in used if r.passes and r.p50_ms is not None]
        best = min(passing, key=lambda r: r.p50_ms) if passing else None
        base = default_p50.get(best.deployment.get("threads")) if best else None
        speedup = base / best.p50_ms if best and base else None
        rows.append(
            LeverRow(
                lever=lever,
                setting=setting,
                candidates=len(used),
                measured=sum(r.status == "done" for r in used),
                passing=len(passing),
                best_p50_ms=best.p50_ms if best else None,
                speedup=speedup,
            )
        )
    return tuple(sorted(rows, key=lambda r: (r.lever, -(r.speedup or 0))))


def _settings(record: CandidateRecord) -> list[tuple[str, str]]:
    network, deployment = record.network, record.deployment
    found = [
        ("runtime", deployment.get("runtime", "")),
        (
            "precision",
            deployment.get("precision", "")
            + (f" keep {deployment['keep_float']}" if deployment.get("keep_float") else ""),
        ),
        ("threads", str(deployment.get("threads"))),
        ("drop blocks", str(network.get("drop_blocks", 0))),
        ("prune", f"{network.get('prune', 0):.0%}"),
        ("student width", f"{network.get('width', 1.0):g}x"),
    ]
    if network.get("input_size"):
        found.append(("input size", f"{network['input_size']} px"))
    for name, choice in (deployment.get("options") or {}).items():
        found.append((f"{deployment.get('runtime')} {name}", str(choice)))
    return found


def with_bundle(winner: Winner, target: str | None, data: str) -> Winner:
    """The winner with a ready bundle for a board (``target``), beside its artifact; unchanged without a target."""
    from dataclasses import replace

    from edgex.deploy import build_bundle

    if target is None:
        return winner
    out = Path(winner.artifact).with_name(f"{target}.tar.gz")
    bundle = build_bundle(winner.artifact, target, out, eval_data=data, threads=winner.threads, force=True)
    return replace(winner, bundle=bundle.path)
