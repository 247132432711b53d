"""A study's files: study.json (written last: its presence marks a finished study), study.csv, summary.md and
plots (top-1 with intervals, latency, learning curves)."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path

from devices.files import write_text_atomic
from edgex.study.config import STUDIES
from edgex.study.results import StudyResult

CSV_FIELDS = ("variant", "architecture", "params", "macs", "seeds", "top1_mean", "top1_low", "top1_high")


def write_study_files(result: StudyResult, out: Path) -> StudyResult:
    files = {"json": out / "study.json", "csv": out / "study.csv", "summary": out / "summary.md"}
    files.update(plot_study(result, out))
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


def plot_study(result: StudyResult, out: Path) -> dict[str, Path]:
    from edgex.plots import _pyplot, _save

    plt = _pyplot()
    names = [v.name for v in result.variants]
    files = {}
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names)), 4))
    for i, v in enumerate(result.variants):
        mean, low, high = v.interval
        error = [[mean - low], [high - mean]] if low is not None else None
        ax.errorbar([i], [100 * mean], yerr=None if error is None else [[100 * e[0]] for e in error], fmt="o",
                    capsize=4, color="tab:blue")  # fmt: skip
        ax.scatter([i] * len(v.top1), [100 * a for a in v.top1], color="tab:gray", s=10, alpha=0.6)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_ylim(0, 100)  # a t-interval of two or three seeds can reach past the possible range
    ax.set_title(f"{result.config.study}: top-1, mean and 95% interval over seeds (gray: each seed)")
    ax.grid(True, axis="y", alpha=0.3)
    files["accuracy_plot"] = _save(fig, out / "accuracy.png")
    pairs = [pair for pair in _latency_columns(result) if any(v.p50(*pair) for v in result.variants)]
    if pairs:
        fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names)), 4))
        for runtime, precision in pairs:
            ys = [v.p50(runtime, precision) for v in result.variants]
            ax.plot(range(len(names)), [float("nan") if y is None else y for y in ys], marker="o",
                    label=f"{runtime} {precision}")  # fmt: skip
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("latency p50 (ms, one thread)")
        ax.set_title(f"{result.config.study}: latency per runtime and precision")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        files["latency_plot"] = _save(fig, out / "latency.png")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for v in result.variants:
        epochs = range(1, min(len(r.curve) for r in v.runs) + 1)
        mean = [sum(r.curve[e - 1] for r in v.runs) / len(v.runs) for e in epochs]
        ax.plot(list(epochs), [100 * m for m in mean], marker=".", label=v.name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%), mean over seeds")
    ax.set_title(f"{result.config.study}: learning curves")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    files["curves_plot"] = _save(fig, out / "curves.png")
    return files


__all__ = ["study_csv", "study_section_markdown", "summary_markdown", "write_study_files"]
