"""The run report: report.html (self-contained apart from its PNG plots) and report.md, both rendered from the same
sections."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from devices import sysinfo
from devices.files import write_text_atomic
from edgex.pipeline.recipe import Recipe
from edgex.pipeline.runfolder import SummaryRow, best_variants, read_json, reproduce_commands, summary_rows

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
line-height:1.45;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .5rem}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#eef8ee}.plots{display:flex;flex-direction:column;gap:1.5rem}
.plots figure{margin:0}.plots img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}code,pre{background:#f6f6f6;padding:.1rem .3rem;border-radius:3px}
pre{padding:.6rem;overflow-x:auto}.muted{color:#666;font-size:.9rem}
"""


def _fmt(value, kind: str = "") -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "points":
        return f"{value:+.2f}"
    if kind == "ms":
        return f"{value:.3f}"
    if kind == "bytes":
        return f"{value / 2**20:.2f} MiB" if value >= 2**20 else f"{value / 1024:.1f} KiB"
    if kind == "x":
        return f"{value:.2f}x"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


COLUMNS = [
    ("variant", "variant", ""),
    ("format", "format", ""),
    ("precision", "precision", ""),
    ("sparsity", "sparsity", ""),
    ("size_bytes", "size", "bytes"),
    ("top1", "top-1", "pct"),
    ("drop_points", "drop vs float (points)", "points"),
    ("p50_ms", "p50 ms", "ms"),
    ("p90_ms", "p90 ms", "ms"),
    ("images_per_s", "img/s", ""),
    ("speedup_vs_keras", "speedup vs fp32 Keras", "x"),
]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]  # per column: right-aligned
    highlight: tuple[bool, ...] = ()  # per row: one of the best variants
    id: str = ""


@dataclass(frozen=True)
class Section:
    """One heading of the report. Text may mark **bold** and `code`; both renderers understand it."""

    title: str
    level: int = 2
    text: str = ""
    bullets: tuple[str, ...] = ()
    table: Table | None = None
    figures: tuple[tuple[str, str], ...] = ()  # (relative path, caption)
    note: str = ""


FRONT_CAPTION = (
    "The dashed staircase is the Pareto front: no other variant is both {} and more accurate than a ringed one."
)
ACCURACY_AXES = {"ylabel": "top-1 accuracy (%)", "logx": True}


@dataclass(frozen=True)
class ReportPlot:
    name: str  # the PNG's stem under plots/
    caption: str
    draw: Callable  # returns the figure


def report_plots(out: Path) -> list[ReportPlot]:
    """Every plot of the report, drawn from the run folder's data when called."""
    from edgex import plots
    from edgex.sepconv.compare import compare_plots
    from edgex.sepconv.sweep_report import sweep_plots
    from edgex.sepconv.sweep_results import rows_and_roofs
    from edgex.tune.report import pareto_figure

    rows = summary_rows(out)
    compare = read_json(out / "compare" / "compare.json") or {}
    sweep = read_json(out / "sweep.json")
    made = []
    timed = [r for r in rows if r.p50_ms is not None]
    if timed:
        points = [plots.Point(label=r.variant, x=r.p50_ms, y=100 * r.top1, group=r.format) for r in timed]
        title = "Top-1 accuracy against latency, every variant"
        front = "Pareto front: none both\nfaster and more accurate"
        draw = partial(plots.tradeoff, points, xlabel="latency p50 (ms)", title=title, front=front, **ACCURACY_AXES)
        caption = "Accuracy against latency on this device. " + FRONT_CAPTION.format("faster")
        made.append(ReportPlot("accuracy_vs_latency", caption, draw))
    if rows:
        points = [plots.Point(label=r.variant, x=r.size_bytes / 2**20, y=100 * r.top1, group=r.format) for r in rows]
        title = "Top-1 accuracy against file size, every variant"
        front = "Pareto front: none both\nsmaller and more accurate"
        draw = partial(plots.tradeoff, points, xlabel="file size (MiB)", title=title, front=front, **ACCURACY_AXES)
        caption = "Accuracy against file size. " + FRONT_CAPTION.format("smaller")
        made.append(ReportPlot("size_vs_accuracy", caption, draw))
    if compare.get("ab"):
        bars = [{**a, "shape": f"{a['runtime']} {a['precision']}"} for a in compare["ab"]]
        title = "Xception over its regular-convolution twin, whole model: measured speedup vs the MAC ratio"
        caption = "Model level: Xception's speedup over its regular-convolution twin, measured against the MAC ratio."
        made.append(ReportPlot("model_ab", caption, partial(plots.speedups, bars, title=title)))
    if compare.get("breakdown"):
        draw = compare_plots((), compare["breakdown"])["breakdown"]
        made.append(ReportPlot("time_breakdown", "Per-op-type time share next to MAC share.", draw))
    tune = read_json(out / "tune" / "tune.json")
    if tune and tune["candidates"]:
        caption = "edgex tune's candidates: top-1 on the selection split against latency on this device."
        made.append(ReportPlot("tune_pareto", caption, partial(pareto_figure, tune)))
    drawn = sweep_plots(*rows_and_roofs(sweep), sweep["speedups"]) if sweep else {}
    for name, source, caption in (
        ("sweep_speedup", "speedup", "Layer level: separable vs regular speedup per shape."),
        ("roofline", "roofline", "Every swept layer on the measured roofline."),
        ("sweep_latency", "latency_vs_macs", "One-layer latency against MACs."),
    ):
        if source in drawn:
            made.append(ReportPlot(name, caption, drawn[source]))
    return made


def _plots(out: Path) -> dict[str, tuple[str, str]]:
    """Draw the report's PNGs under out/plots: name -> (relative path, caption)."""
    from edgex.plots import save

    folder = out / "plots"
    folder.mkdir(exist_ok=True)
    made: dict[str, tuple[str, str]] = {}
    for plot in report_plots(out):
        save(plot.draw(), folder / f"{plot.name}.png")
        made[plot.name] = (f"plots/{plot.name}.png", plot.caption)
    return made


def write_report(out: Path, recipe: Recipe) -> list[Path]:
    rows = summary_rows(out)
    compare = read_json(out / "compare" / "compare.json")
    plots = _plots(out)
    sections = _sections(out, recipe, rows, compare, plots)
    html_path, md_path = out / "report.html", out / "report.md"
    write_text_atomic(html_path, to_html(sections, f"edgex report: {out.name}"))
    write_text_atomic(md_path, to_markdown(sections))
    return [html_path, md_path, *(out / p for p, _ in plots.values())]


def _sections(out: Path, recipe: Recipe, rows, compare, plots) -> list[Section]:
    data = read_json(out / "data.json") or {}
    deploy = read_json(out / "deploy.json")
    best = best_variants(rows, recipe.report.max_drop)
    bullets = []
    if best.smallest:
        gate = f"drop <= {recipe.report.max_drop:g} points"
        bullets.append(f"smallest within the accuracy gate ({gate}): **{best.smallest}**")
    if best.fastest:
        bullets.append(f"fastest within the gate: **{best.fastest}**")
    if deploy:
        bullets.append(f"bundle for **{deploy['target']}**: `{deploy['bundle']}` ({deploy['variant']})")
    head = (
        f"run `{out}` · preset **{recipe.preset}** · data **{recipe.data}** ({data.get('train', '?')} train / "
        f"{data.get('val', '?')} val images) · devices {', '.join(recipe.devices)}"
    )
    env = {**sysinfo.environment(), **sysinfo.versions()}
    stages = {p.stem: json.loads(p.read_text()) for p in sorted((out / "stages").glob("*.json"))}
    commands = reproduce_commands(out, recipe, rows)
    return [
        Section(title="edgex report", level=1, text=head),
        Section(title="Best for this device", bullets=tuple(bullets)),
        _variants_section(rows, best),
        *_separable_sections(compare, read_json(out / "sweep.json")),
        *_study_sections(out),
        *_tune_sections(out),
        Section(title="Plots", figures=tuple(plots.values())),
        Section(
            title="Environment",
            table=Table(header=("item", "value"), rows=tuple((str(k), str(v)) for k, v in env.items()), numeric=(0, 0)),
        ),
        Section(
            title="Reproduce",
            text="Every artifact, one command each:",
            table=Table(header=("artifact", "command"), rows=tuple((n, f"`{c}`") for n, c in commands), numeric=(0, 0)),
            note=f"The whole run: `edgex pipeline --config {out / 'recipe.yaml'} --out NEW_FOLDER`",
        ),
        Section(
            title="Stages",
            table=Table(
                header=("stage", "time (last run)", "input hash"),
                rows=tuple((n, f"{s.get('seconds', 0):.1f} s", f"`{s['hash']}`") for n, s in stages.items()),
                numeric=(0, 1, 0),
            ),
        ),
    ]


def _variants_section(rows: list[SummaryRow], best) -> Section:
    cells = tuple(tuple(_fmt(getattr(r, key), kind) for key, _, kind in COLUMNS) for r in rows)
    table = Table(
        header=tuple(label for _, label, _ in COLUMNS),
        rows=cells,
        numeric=tuple(bool(kind) for _, _, kind in COLUMNS),
        highlight=tuple(r.variant in (best.smallest, best.fastest) for r in rows),
        id="variants",
    )
    note = (
        "top-1 on the validation split through each artifact's own runtime; latency from the bench stage "
        "(bench.json). Pruning shrinks compressed size, not latency, unless the runtime has sparse kernels: the "
        "latency column is what was measured."
    )
    return Section(title="Variants", table=table, note=note)


def _separable_sections(compare: dict | None, sweep: dict | None) -> list[Section]:
    from edgex.sepconv.compare import EFFICIENCY_NOTE

    sections = []
    if compare and compare.get("ab"):
        header = ("runtime", "precision", "Xception ms", "twin ms", "measured speedup", "MAC ratio", "efficiency")
        rows = tuple(
            (
                a["runtime"],
                a["precision"],
                f"{a['xception_ms']:.3f}",
                f"{a['twin_ms']:.3f}",
                f"{a['measured_speedup']:.2f}x",
                f"{a['theoretical_speedup']:.2f}x",
                f"{a['measured_speedup'] / a['theoretical_speedup']:.0%}",
            )
            for a in compare["ab"]
        )
        table = Table(header=header, rows=rows, numeric=(0, 0, 1, 1, 1, 1, 1), id="ab")
        sections.append(Section(title="Separable vs regular convolutions", table=table, note=EFFICIENCY_NOTE))
    if sweep:
        rows = tuple(
            (r["runtime"], r["precision"], f"{r['compute_gops']:.1f}", f"{r['bandwidth_gbs']:.1f}")
            for r in sweep["roofs"]
        )
        header = ("runtime", "precision", "compute G op/s", "bandwidth GB/s")
        table = Table(header=header, rows=rows, numeric=(0, 0, 1, 1))
        sections.append(Section(title="Layer sweep: measured roofs", level=3, table=table))
    return sections


def _study_sections(out: Path) -> list[Section]:
    """One section per study the study stage ran: accuracy over seeds, costs, latency, and the paper's orderings."""
    sections = []
    for path in sorted(out.glob("study/*/study.json")):
        study = json.loads(path.read_text())
        pairs = sorted({(t["runtime"], t["precision"]) for v in study["variants"] for t in v["latency"]})
        header = (
            "variant",
            "params",
            "MACs",
            "seeds",
            "top-1 mean",
            "95% interval",
            *(f"{r} {p} ms" for r, p in pairs),
        )
        rows = tuple(_study_row(v, pairs) for v in study["variants"])
        numeric = (0, 1, 1, 1, 1, 0, *(1 for _ in pairs))
        table = Table(header=header, rows=rows, numeric=numeric, id=f"study-{study['study']}")
        folder = path.parent.relative_to(out)
        figures = tuple(
            (str(folder / name), caption)
            for name, caption in (
                ("accuracy.png", "top-1 over seeds"),
                ("curves.png", "learning curves"),
                ("latency.png", "latency"),
            )
            if (path.parent / name).is_file()
        )
        config = study["config"]
        text = (
            f"{config['seeds']} seeds, {config['epochs']} epochs; top-1 on the validation split, mean and 95% "
            "t-interval."
        )
        bullets = tuple(c["sentence"] for c in study["comparisons"])
        sections.append(
            Section(title=f"Study: {study['study']}", text=text, table=table, bullets=bullets, figures=figures)
        )
    return sections


def _tune_sections(out: Path) -> list[Section]:
    """The tune stage: its winner against the default int8 artifact, what each lever bought, the Pareto plot."""
    from edgex.tune.report import LEVER_COLUMNS, lever_cells
    from edgex.tune.results import LeverRow

    tune = read_json(out / "tune" / "tune.json")
    if not tune:
        return []
    winner, counts = tune["winner"], tune["counts"]
    text = (
        f"{len(tune['candidates'])} candidates in {tune['seconds']:.0f} s ({counts['done']} measured, "
        f"{counts['pruned']} stopped early, {counts['failed']} failed); gate {tune['max_drop']:g} points on "
        f"{tune['selection_samples']} selection samples, the winner re-checked on {tune['heldout_samples']} held out."
    )
    bullets = ()
    if winner:
        versus = winner["versus_default"].get("line", "")
        bullets = (
            f"winner: trial {winner['trial']}, {winner['runtime']} {winner['precision']}, {winner['threads']} "
            f"thread(s): `{Path(winner['artifact']).relative_to(out)}`",
            f"top-1 {100 * winner['selection_top1']:.2f}% selection, {100 * winner['heldout_top1']:.2f}% held out "
            f"(model {100 * tune['float_selection']:.2f}% / {100 * tune['float_heldout']:.2f}%)",
            *([f"against the default int8 artifact: {versus}"] if versus else []),
        )
    levers = [LeverRow(**row) for row in tune["levers"]]
    rows, header = tuple(lever_cells(levers)), LEVER_COLUMNS
    table = Table(header=header, rows=rows, numeric=(0, 0, 1, 1, 1, 1, 1), id="tune-levers")
    figures = (
        (("tune/pareto.png", "tune candidates: top-1 against latency"),) if (out / "tune/pareto.png").is_file() else ()
    )
    title = "Tune: the fastest artifact within the gate"
    return [Section(title=title, text=text, table=table, bullets=bullets, figures=figures)]


def _study_row(variant: dict, pairs) -> tuple[str, ...]:
    low, high = variant["top1_ci95"]
    interval = "-" if low is None else f"{100 * low:.1f} .. {100 * high:.1f}%"
    times = {(t["runtime"], t["precision"]): t["p50_ms"] for t in variant["latency"]}
    return (
        variant["name"],
        f"{variant['params']:,}",
        f"{variant['macs'] / 1e6:.2f} M",
        str(len(variant["top1"])),
        f"{100 * variant['top1_mean']:.1f}%",
        interval,
        *("-" if times.get(pair) is None else f"{times[pair]:.3f}" for pair in pairs),
    )


def _inline_html(text: str) -> str:
    """Escape, then turn **bold** and `code` into tags."""
    text = re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))
    return re.sub(r"\*\*([^*]*)\*\*", r"<b>\1</b>", text)


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = []
    for index, row in enumerate(table.rows):
        best = " class='best'" if table.highlight and table.highlight[index] else ""
        cells = "".join(
            f"<td{' class=num' if num else ''}>{_inline_html(cell)}</td>" for cell, num in zip(row, table.numeric)
        )
        body.append(f"<tr{best}>{cells}</tr>")
    ident = f" id='{table.id}'" if table.id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def to_html(sections: list[Section], title: str) -> str:
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>"
    ]
    for s in sections:
        parts.append(f"<h{s.level}>{html.escape(s.title)}</h{s.level}>")
        if s.text:
            parts.append(f"<p{' class=muted' if s.level == 1 else ''}>{_inline_html(s.text)}</p>")
        if s.bullets:
            parts.append("<ul>" + "".join(f"<li>{_inline_html(b)}</li>" for b in s.bullets) + "</ul>")
        if s.table:
            parts.append(_table_html(s.table))
        if s.figures:
            figures = "".join(
                f"<figure><img src='{html.escape(p)}' alt='{html.escape(c)}'><figcaption>{html.escape(c)}"
                "</figcaption></figure>"
                for p, c in s.figures
            )
            parts.append(f"<div class='plots'>{figures}</div>")
        if s.note:
            parts.append(f"<p class='muted'>{_inline_html(s.note)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _table_markdown(table: Table) -> list[str]:
    align = "|" + "".join("---:|" if num else "---|" for num in table.numeric)
    lines = ["| " + " | ".join(table.header) + " |", align]
    return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table.rows]


def to_markdown(sections: list[Section]) -> str:
    lines: list[str] = []
    for s in sections:
        lines += ["#" * s.level + " " + s.title, ""]
        if s.text:
            lines += [s.text, ""]
        if s.bullets:
            lines += [f"- {b}" for b in s.bullets] + [""]
        if s.table:
            lines += [*_table_markdown(s.table), ""]
        lines += [f"![{caption}]({path})" for path, caption in s.figures] + ([""] if s.figures else [])
        if s.note:
            lines += [s.note, ""]
    return "\n".join(lines).rstrip() + "\n"
