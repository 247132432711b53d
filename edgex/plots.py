"""PNG plots for sweeps, comparisons and reports (matplotlib, headless): labelled axes with units, legends beside
the axes, log scales where the data spans decades, tick labels as plain numbers, and point labels that never
overlap. Every builder returns a Figure; ``save`` writes it."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

from devices.files import atomic_path
from edgex.plot_labels import place_labels

DPI = 110  # figures are laid out at the resolution they are saved at, so measured text extents hold in the PNG
VARIANT_MARKERS = {"regular": "s", "separable": "o", "depthwise": "v", "pointwise": "^"}
PRECISION_COLORS = {"fp32": "tab:blue", "fp16": "tab:green", "int8": "tab:red"}
KIND_COLORS = {
    "pointwise": "tab:blue",
    "depthwise": "tab:orange",
    "regular": "tab:green",
    "shortcut": "tab:purple",
    "dense": "tab:brown",
    "other": "tab:gray",
}
GROUP_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
GROUP_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
MARKER_SIZE = 36  # points^2, for every labelled scatter
RING_SIZE = 2 * MARKER_SIZE  # the ring around a point on the Pareto front
LABELS = {"marker_radius": math.sqrt(RING_SIZE) / 2 * DPI / 72, "fontsize": 8}  # pixels (the largest marker), points


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure(width: float, height: float, **subplots):
    """A figure and its axes at the saving resolution."""
    return _pyplot().subplots(figsize=(width, height), dpi=DPI, **subplots)


def save(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
    _pyplot().close(fig)
    return path


# -- axes: plain ticks, legends beside the plot -----------------------------------------------------------------------
def _plain(value: float, _position=None) -> str:
    import numpy as np

    return np.format_float_positional(value, precision=6, unique=True, fractional=False, trim="-")


def plain_ticks(*axes) -> None:
    """Tick labels as plain numbers (0.2, 0.25, 1, 50), never 2x10^-1 or an offset, also on log axes.

    Call it once the axis limits are final: a log axis spanning less than a decade gets evenly stepped ticks inside
    them (0.2, 0.25, 0.3), since powers of ten would leave it with one tick or none. Ticks the caller fixed stay."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    for axis in axes:
        if axis.get_scale() == "log":
            if not isinstance(axis.get_major_locator(), FixedLocator):
                axis.set_major_locator(_log_locator(*sorted(axis.get_view_interval())))
            axis.set_minor_formatter(NullFormatter())
        axis.set_major_formatter(FuncFormatter(_plain))


def _log_locator(low: float, high: float):
    from matplotlib.ticker import FixedLocator, LogLocator, MaxNLocator

    decades = math.log10(high / low)
    if decades < 1:
        ticks = MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
        return FixedLocator([t for t in ticks if low <= t <= high])
    return LogLocator(subs=(1.0, 2.0, 3.0, 5.0) if decades <= 2 else (1.0, 2.0, 5.0) if decades <= 4 else (1.0,))


def legend_beside(ax, **kwargs):
    """The legend right of the axes, where it can hide no data and no label."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, **kwargs)


def _wrap(label: str) -> str:
    return label.replace(" ", "\n")


# -- the sweep's and the comparison's plots ---------------------------------------------------------------------------
def latency_vs_macs(rows):
    """One point per swept layer: its latency against its MACs; marker by variant, colour by precision."""
    fig, ax = figure(7.5, 5)
    runtimes = list(dict.fromkeys(r.runtime for r in rows))
    for runtime in runtimes:
        hollow = runtime != runtimes[0]  # the second runtime's points are hollow
        for variant, marker in VARIANT_MARKERS.items():
            for precision, color in PRECISION_COLORS.items():
                points = [
                    (r.macs / 1e6, r.p50_ms)
                    for r in rows
                    if r.runtime == runtime and r.variant == variant and r.precision == precision
                ]
                if points:
                    xs, ys = zip(*points)
                    label = f"{variant} {precision}" + (f" ({runtime})" if len(runtimes) > 1 else "")
                    ax.scatter(
                        xs,
                        ys,
                        marker=marker,
                        facecolors="none" if hollow else color,
                        edgecolors=color,
                        label=label,
                        alpha=0.8,
                    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("multiply-accumulates per inference (millions)")
    ax.set_ylabel("latency p50 (ms)")
    ax.set_title("One layer: latency against its multiply-accumulates")
    ax.grid(True, which="both", alpha=0.3)
    plain_ticks(ax.xaxis, ax.yaxis)
    legend_beside(ax)
    return fig


def speedups(table, *, title: str):
    """Per group (a layer shape, or a runtime and precision), one row of horizontal bars: the theoretical speedup
    (the MAC ratio) and each measured one, centred on the group's label."""
    groups = list(dict.fromkeys(s["shape"] for s in table))
    series = list(dict.fromkeys((s["runtime"], s["precision"]) for s in table))
    measured = {(s["shape"], s["runtime"], s["precision"]): s["measured_speedup"] for s in table}
    theoretical = {s["shape"]: s["theoretical_speedup"] for s in table}
    bars = {
        group: [(None, theoretical[group])]
        + [(pair, measured[(group, *pair)]) for pair in series if (group, *pair) in measured]
        for group in groups
    }
    most = max(len(b) for b in bars.values())
    fig, ax = figure(7.5, max(3.0, 1.2 + 0.16 * most * len(groups)))
    named = set()
    for y, group in enumerate(groups):
        for i, (pair, value) in enumerate(bars[group]):
            if pair is None:
                style = {"color": "lightgray", "edgecolor": "black", "label": "theoretical (MAC ratio)"}
            else:
                runtime, precision = pair
                style = {"color": PRECISION_COLORS.get(precision), "alpha": 0.6 + 0.4 * (runtime == "litert"),
                         "label": f"measured, {runtime} {precision}"}  # fmt: skip
            if style["label"] in named:
                style["label"] = None
            named.add(style["label"])
            ax.barh(y + (i - (len(bars[group]) - 1) / 2) * 0.8 / most, value, 0.8 / most, **style)
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set_yticks(range(len(groups)), groups, fontsize=8)
    ax.invert_yaxis()  # the first group on top
    ax.set_xlabel("speedup of separable over regular (x, log scale)")
    ax.set_xscale("log")
    ax.set_title(title)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    plain_ticks(ax.xaxis)
    legend_beside(ax)
    return fig


def roofline(rows, roofs):
    """Every swept layer's achieved throughput against its arithmetic intensity, under the measured roofs."""
    import numpy as np

    fig, ax = figure(7.5, 5.5)
    intensities = [r.intensity for r in rows] or [1.0]
    xs = np.logspace(np.log10(min(intensities) / 2), np.log10(max(intensities) * 2), 200)
    for roof in roofs:
        color = PRECISION_COLORS.get(roof.precision, "black")
        style = "-" if roof.runtime == "litert" else "--"
        ax.plot(
            xs,
            [roof.attainable(x) for x in xs],
            style,
            color=color,
            label=f"roof {roof.runtime} {roof.precision}:\n{roof.compute_gops:.3g} G op/s, "
            f"{roof.bandwidth_gbs:.3g} GB/s",
        )
    runtimes = list(dict.fromkeys(r.runtime for r in rows))
    for r in rows:  # filled: LiteRT (or the only runtime); hollow: the second runtime; faint: not valid
        hollow = len(runtimes) > 1 and r.runtime != runtimes[0]
        color = PRECISION_COLORS.get(r.precision, "black")
        ax.scatter(
            r.intensity,
            r.gops,
            marker=VARIANT_MARKERS.get(r.variant, "o"),
            facecolors="none" if hollow else color,
            edgecolors=color,
            alpha=0.8 if r.valid else 0.3,
        )
    for variant, marker in VARIANT_MARKERS.items():
        ax.scatter([], [], marker=marker, color="gray", label=variant)
    if len(runtimes) > 1:
        ax.scatter([], [], marker="o", facecolors="none", edgecolors="gray", label=f"hollow: {runtimes[1]}")
    if not all(r.valid for r in rows):
        ax.scatter([], [], marker="o", color="gray", alpha=0.3, label="faint: not a valid\nmeasurement")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (operations per byte moved)")
    ax.set_ylabel("achieved throughput (G op/s; 2 ops per MAC)")
    ax.set_title("Roofline: every swept layer against the measured roofs")
    ax.grid(True, which="both", alpha=0.3)
    plain_ticks(ax.xaxis, ax.yaxis)
    legend_beside(ax)
    return fig


def time_breakdown(breakdown: dict):
    """breakdown: {model label: {kind: (time share, MAC share)}} -> side-by-side stacked bars."""
    labels = list(breakdown)
    longest = max(len(line) for label in labels for line in label.split())
    fig, ax = figure(max(7.5, (0.075 * longest + 0.6) * len(labels) + 2), 5.5)  # 0.075 in: a character at 8 points
    kinds = list(dict.fromkeys(k for shares in breakdown.values() for k in shares))
    for j in range(2):  # time share, then MAC share
        bottoms = [0.0] * len(labels)
        for kind in kinds:
            values = [breakdown[label].get(kind, (0, 0))[j] * 100 for label in labels]
            positions = [i * 2.2 + j for i in range(len(labels))]
            ax.bar(
                positions,
                values,
                0.9,
                bottom=bottoms,
                color=KIND_COLORS.get(kind, "gray"),
                label=kind if j == 0 else None,
                hatch="" if j == 0 else "//",
                edgecolor="white",
            )
            bottoms = [b + v for b, v in zip(bottoms, values)]
    ax.bar([0], [0], 0, color="lightgray", hatch="//", edgecolor="white", label="hatched: MAC share")
    ax.set_xticks([i * 2.2 + 0.5 for i in range(len(labels))])
    ax.set_xticklabels([f"{_wrap(label)}\n(time | MACs)" for label in labels], fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("share of time (solid) or of MACs (hatched), %")
    ax.set_title("Where the time goes, next to where the arithmetic is, per model and runtime", pad=12)  # over "100"
    legend_beside(ax)
    return fig


# -- a trade-off plot: labelled points, groups, the Pareto front ---------------------------------------------------
@dataclass(frozen=True)
class Point:
    """One point of a trade-off plot (a variant, a candidate)."""

    label: str
    x: float
    y: float
    group: str = ""  # points of a group share a colour and a marker, keyed in the legend
    status: str = "done"  # done; pruned (stopped early: drawn hollow, unlabelled); failed (left out, counted)


def pareto_front(points: list[Point]) -> list[Point]:
    """The points that no other point beats on both axes, lower x and higher y (a faster, more accurate variant), by x.

    A point equal to another on both axes is on the front with it; failed and pruned points take no part."""
    done = [p for p in points if p.status == "done"]

    def beaten(p: Point) -> bool:
        return any(q.x <= p.x and q.y >= p.y and (q.x < p.x or q.y > p.y) for q in done)

    return sorted((p for p in done if not beaten(p)), key=lambda p: (p.x, p.y))


def tradeoff(
    points: list[Point],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    logy: bool = False,
    front: str | None = "Pareto front",
):
    """Labelled points coloured by group, and the Pareto front (lower x and higher y are better) as a dashed staircase
    through ringed points, with ``front`` as its legend entry (None: no front). Labels go where they overlap
    nothing, beside their point or close by with a leader line; a point in a cluster too tight for its name gets a
    number, keyed in the legend. Pruned points are hollow and unlabelled, failed ones counted in the legend."""
    shown = [p for p in points if p.status != "failed" and math.isfinite(p.x) and math.isfinite(p.y)]
    labelled = [p for p in shown if p.status == "done"]
    fig, ax = figure(7.5, 5)
    styles = _draw_groups(ax, shown)
    lines = _draw_front(ax, pareto_front(shown), front) if front and labelled else []
    if len(points) > len(shown):
        ax.plot([], [], " ", label=f"{len(points) - len(shown)} failed, not shown")
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    ax.margins(x=0.08, y=0.12)
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    plain_ticks(ax.xaxis, ax.yaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    _label_points(ax, labelled, [(p.x, p.y) for p in shown if p.status != "done"], lines, styles)
    handles = ax.get_legend_handles_labels()[0]
    if handles:
        legend_beside(ax, ncol=1 if len(handles) <= 24 else 2)
    return fig


def _label_points(ax, points: list[Point], others, lines, styles) -> None:
    """Names (or numbers keyed in the legend) for ``points``, on a bigger canvas if they find no room; a name that
    finds none even then is listed under the x axis."""
    fig = ax.figure
    anchors, labels = [(p.x, p.y) for p in points], [p.label for p in points]
    width, height = fig.get_size_inches()
    for scale in (1.0, 1.4, 2.0):
        fig.set_size_inches(width * scale, height * scale)
        texts, numbered, homeless = place_labels(
            ax, anchors, labels, others=others, lines=lines, numbers=True, **LABELS
        )
        if not homeless or scale == 2.0:
            break
        for text in texts:
            text.remove()
    if homeless:
        names = ", ".join(labels[i] for i in homeless)
        ax.set_xlabel(f"{ax.get_xlabel()}\nnot labelled for lack of room: {names}", wrap=True)
    for index, number in sorted(numbered.items(), key=lambda item: item[1]):
        color, marker = styles[points[index].group]
        ax.scatter([], [], s=MARKER_SIZE, color=color, marker=marker, label=f"{number}  {labels[index]}")


def _draw_groups(ax, points: list[Point]) -> dict[str, tuple[str, str]]:
    """Each group's points, filled (done) or hollow (pruned); returns each group's (colour, marker)."""
    styles = {}
    for index, group in enumerate(dict.fromkeys(p.group for p in points)):
        color, marker = GROUP_COLORS[index % len(GROUP_COLORS)], GROUP_MARKERS[index % len(GROUP_MARKERS)]
        styles[group] = (color, marker)
        for status, style in (("done", {"color": color}), ("pruned", {"facecolors": "none", "edgecolors": color})):
            chosen = [p for p in points if p.group == group and p.status == status]
            if chosen:
                label = (group or None) if status == "done" else f"{group} (pruned)".strip()
                ax.scatter([p.x for p in chosen], [p.y for p in chosen], s=MARKER_SIZE, marker=marker, label=label,
                           alpha=1.0 if status == "done" else 0.5, zorder=3, **style)  # fmt: skip
    return styles


def _draw_front(ax, front: list[Point], label: str) -> list[tuple[float, float]]:
    """The front as a staircase: up to a point's x, the best y on offer is its left neighbour's."""
    corners = [(front[0].x, front[0].y)]
    for left, right in itertools.pairwise(front):
        corners += [(right.x, left.y), (right.x, right.y)]
    xs, ys = zip(*corners)
    ax.plot(xs, ys, "--", color="0.3", linewidth=1.2, zorder=2)
    ax.scatter([p.x for p in front], [p.y for p in front], s=RING_SIZE, facecolors="none", edgecolors="0.2",
               linewidths=1.2, zorder=4)  # fmt: skip
    ax.plot([], [], "--o", color="0.3", markerfacecolor="none", markeredgecolor="0.2", label=label)  # the legend's
    return corners
