"""A tune's files: tune.json (written last), tune.md with the lever table, and the Pareto plot of top-1 against
latency."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from devices.files import write_json_atomic, write_text_atomic
from edgex.tune.results import TuneResult


def write_tune_files(result: TuneResult, out: Path) -> TuneResult:
    files = {"json": out / "tune.json", "summary": out / "tune.md", "pareto": out / "pareto.png"}
    pareto_plot(result, files["pareto"])
    write_text_atomic(files["summary"], summary_markdown(result))
    result = replace(result, files={k: str(v) for k, v in files.items()}, out_dir=str(out))
    write_json_atomic(files["json"], result.to_dict())
    return result


def pareto_plot(result: TuneResult, path: Path) -> Path:
    from edgex import plots

    return plots.save(pareto_figure(result.to_dict()), path)


def pareto_figure(tune: dict):
    """Every measured candidate of a tune (tune.json's form) by its selection top-1 against its latency, by runtime
    and precision: those that passed the gate with the fastest-within-the-gate front among them, the others hollow."""
    from edgex import plots

    points = [
        plots.Point(
            label=f"#{c['number']}",
            x=c["p50_ms"],
            y=100 * c["selection_top1"],
            group=f"{c['deployment'].get('runtime')} {c['deployment'].get('precision')}",
            status="done" if c["passes"] else "pruned",
        )
        for c in tune["candidates"]
        if c["p50_ms"] is not None and c["selection_top1"] is not None
    ]
    gate = 100 * tune["float_selection"] - tune["max_drop"]
    title = f"edgex tune on {tune['device']}: top-1 (selection split) against latency; hollow: below {gate:.1f}%"
    return plots.tradeoff(points, xlabel="latency p50 (ms)", ylabel="top-1 (%)", title=title, logx=True,
                          front="fastest within the gate")  # fmt: skip


def lever_lines(result: TuneResult) -> list[str]:
    lines = [f"| {' | '.join(LEVER_COLUMNS)} |", "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {' | '.join(cells)} |" for cells in lever_cells(result.levers)]
    return lines


LEVER_COLUMNS = ("lever", "setting", "candidates", "measured", "passed", "fastest passing ms", "vs default int8")


def lever_cells(levers) -> list[tuple[str, ...]]:
    """The lever table's rows as text (tune.md, the terminal and the pipeline's report share them)."""
    return [
        (row.lever, row.setting, str(row.candidates), str(row.measured), str(row.passing),
         "-" if row.best_p50_ms is None else f"{row.best_p50_ms:.3f}", f"{row.speedup:.2f}x" if row.speedup else "-")
        for row in levers
    ]  # fmt: skip


def winner_lines(result: TuneResult) -> list[str]:
    winner = result.winner
    if winner is None:
        return ["No candidate passed the gate on both the selection and the held-out split."]
    versus = winner.versus_default
    lines = [
        f"Winner: trial {winner.trial}, {winner.runtime} {winner.precision}, {winner.threads} thread(s): "
        f"`{winner.artifact}`",
        f"- top-1: selection {100 * winner.selection_top1:.2f}% (model {100 * result.float_selection:.2f}%), "
        f"held-out {100 * winner.heldout_top1:.2f}% (model {100 * result.float_heldout:.2f}%)",
        f"- latency p50 {winner.p50_ms:.3f} ms on {result.device}",
    ]
    if versus:
        lines.append(f"- against the default int8 artifact: {versus['line']}")
    return lines


def summary_markdown(result: TuneResult) -> str:
    counts = result.to_dict()["counts"]
    lines = [
        f"# edgex tune: {Path(result.model).name} on {result.device}",
        "",
        f"Gate: at most {result.max_drop:g} points of top-1 below the model on the selection split "
        f"({result.selection_samples} samples), the winner re-checked on {result.heldout_samples} held-out samples. "
        f"{len(result.candidates)} candidates: {counts['done']} measured, {counts['pruned']} stopped early, "
        f"{counts['failed']} failed; {result.seconds:.0f} s.",
        "",
        *winner_lines(result),
        "",
        "## What each lever bought",
        "",
        *lever_lines(result),
        "",
        *(f"- {note}" for note in result.notes),
    ]
    return "\n".join(lines).rstrip() + "\n"
