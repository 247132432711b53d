"""A study's files: study.json (written last: its presence marks a finished study), study.csv, summary.md and
plots (top-1 with intervals, latency, learning curves)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

from devices.files import write_text_atomic
from edgex.study.config import STUDIES
from edgex.study.results import StudyResult

CSV_FIELDS = ("variant", "architecture", "params", "macs", "seeds", "top1_mean", "top1_low", "top1_high")


def write_study_files(result: StudyResult, out: Path) -> StudyResult:
    from edgex.plots import save

    files = {"json": out / "study.json", "csv": out / "study.csv", "summary": out / "summary.md"}
    files.update({f"{name}_plot": save(draw(), out / f"{name}.png") for name, draw in study_plots(result).items()})
    result = replace(result, files={k: str(v) for k, v in files.items()})
    write_text_atomic(files["csv"], study_csv(result))
    write_text_atomic(files["summary"], summary_markdown(result))
    write_text_atomic(files["json"], result.to_json())
    return result


def _latency_columns(result: StudyResult) -> list[tuple[str, str]]:
    return [(r, p) for r in result.config.runtimes for p in result.config.precisions]


def study_csv(result: StudyResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    pairs = _latency_columns(result)
    writer.writerow([*CSV_FIELDS, *(f"p50_ms_{r}_{p}" for r, p in pairs)])
    for v in result.variants:
        mean, low, high = v.interval
        p50s = [v.p50(r, p) for r, p in pairs]
        writer.writerow([v.name, v.architecture, v.params, v.macs, len(v.runs), mean, low, high, *p50s])
    return buffer.getvalue()


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def accuracy_table(result: StudyResult) -> list[str]:
    pairs = _latency_columns(result)
    lines = [
        "| variant | params | MACs | seeds | top-1 % mean | 95% interval | "
        + "".join(f"{r} {p} ms | " for r, p in pairs),
        "|---|---:|---:|---:|---:|---|" + "---:|" * len(pairs),
    ]
    for v in result.variants:
        mean, low, high = v.interval
        times = "".join(f"{'-' if v.p50(r, p) is None else f'{v.p50(r, p):.3f}'} | " for r, p in pairs)
        lines.append(
            f"| {v.name} | {v.params:,} | {v.macs / 1e6:.2f} M | {len(v.runs)} | {_pct(mean)} | "
            f"{_pct(low)} .. {_pct(high)} | {times}"
        )
    return lines


def study_section_markdown(result: StudyResult, level: int = 2) -> str:
    """The study as a report section: the question, the table, and what held and what did not."""
    head = "#" * level
    config = result.config
    lines = [
        f"{head} Study: {config.study}",
        "",
        f"{STUDIES[config.study].question} Data {config.data}, preset {config.preset_name}, {config.epochs} "
        f"epochs, {config.seeds} seeds per variant; top-1 on the validation split, mean with a 95% t-interval; "
        "latency p50 of the seed-0 model, one thread.",
        "",
        *accuracy_table(result),
        "",
    ]
    lines += [f"- {c.sentence}" for c in result.comparisons] or ["- No ordering to check."]
    failed = [f"{v.name} {r.runtime} {r.precision}: {r.note}" for v in result.variants for r in v.latency if r.note]
    if failed:
        lines += ["", "Not timed: " + "; ".join(failed)]
    return "\n".join(lines) + "\n"


def summary_markdown(result: StudyResult) -> str:
    text = study_section_markdown(result, level=1)
    note = (
        f"\nMeasured on {result.cpu or 'this CPU'} in {result.seconds:.0f} s. Orderings are tested with Welch's "
        "t-test over seeds (two-sided, 5%); with a few seeds only large differences resolve.\n"
    )
    return text + note


def study_plots(result: StudyResult) -> dict[str, Callable]:
    """The study's plots, each drawn when called: file stem -> a function returning the figure."""
    drawn = {"accuracy": partial(_accuracy_plot, result)}
    pairs = [pair for pair in _latency_columns(result) if any(v.p50(*pair) for v in result.variants)]
    if pairs:
        drawn["latency"] = partial(_latency_plot, result, pairs)
    drawn["curves"] = partial(_curves_plot, result)
    return drawn


def _variant_ticks(result: StudyResult) -> tuple[list[str], str]:
    """The variants' tick labels and the axis label: a prefix they all share ("segments:") goes to the axis."""
    names = [v.name for v in result.variants]
    prefixes = {name.partition(":")[0] for name in names if ":" in name}
    if len(names) > 1 and len(prefixes) == 1 and all(":" in name for name in names):
        return [name.partition(":")[2] for name in names], prefixes.pop()
    return names, "variant"


def _accuracy_plot(result: StudyResult):
    from edgex.plots import figure

    names, axis = _variant_ticks(result)
    fig, ax = figure(max(5.0, 1.1 * len(names)), 4)
    for i, v in enumerate(result.variants):
        mean, low, high = v.interval
        error = [[mean - low], [high - mean]] if low is not None else None
        ax.errorbar([i], [100 * mean], yerr=None if error is None else [[100 * e[0]] for e in error], fmt="o",
                    capsize=4, color="tab:blue")  # fmt: skip
        ax.scatter([i] * len(v.top1), [100 * a for a in v.top1], color="tab:gray", s=10, alpha=0.6)
    ax.set_xticks(range(len(names)), names)
    ax.set_xlabel(axis)
    ax.set_ylabel("validation top-1 (%)")
    ax.set_ylim(0, 100)  # a t-interval of two or three seeds can reach past the possible range
    ax.set_title(f"{result.config.study}: top-1, mean and 95% interval over seeds\n(gray: each seed)", pad=12)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def _latency_plot(result: StudyResult, pairs):
    from edgex.plots import figure, legend_beside, plain_ticks

    names, axis = _variant_ticks(result)
    fig, ax = figure(max(5.0, 1.1 * len(names)), 4)
    for runtime, precision in pairs:
        ys = [v.p50(runtime, precision) for v in result.variants]
        ax.plot(range(len(names)), [float("nan") if y is None else y for y in ys], marker="o",
                label=f"{runtime} {precision}")  # fmt: skip
    ax.set_xticks(range(len(names)), names)
    ax.set_xlabel(axis)
    ax.set_yscale("log")
    ax.set_ylabel("latency p50 (ms, one thread)")
    ax.set_title(f"{result.config.study}: latency per runtime and precision")
    ax.grid(True, which="both", alpha=0.3)
    plain_ticks(ax.yaxis)
    legend_beside(ax)
    return fig


def _curves_plot(result: StudyResult):
    from matplotlib.ticker import MaxNLocator

    from edgex.plots import figure, legend_beside

    fig, ax = figure(6.5, 4)
    for v in result.variants:
        epochs = range(1, min(len(r.curve) for r in v.runs) + 1)
        mean = [sum(r.curve[e - 1] for r in v.runs) / len(v.runs) for e in epochs]
        ax.plot(list(epochs), [100 * m for m in mean], marker=".", label=v.name)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation top-1 (%), mean over seeds")
    ax.set_title(f"{result.config.study}: learning curves")
    ax.grid(True, alpha=0.3)
    legend_beside(ax)
    return fig


__all__ = ["study_csv", "study_plots", "study_section_markdown", "summary_markdown", "write_study_files"]
