"""PNG plots for sweeps, comparisons and reports (matplotlib, headless): labelled axes with units, legends,
log scales where the data spans decades."""

from __future__ import annotations

from pathlib import Path

from devices.files import atomic_path

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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _pyplot().close(fig)
    return path


def latency_vs_macs(rows, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    runtimes = list(dict.fromkeys(r.runtime for r in rows))
    for runtime in runtimes:
        hollow = runtime != runtimes[0]  # the second runtime's points are hollow
        for variant, marker in VARIANT_MARKERS.items():
            for precision, color in PRECISION_COLORS.items():
                points = [
                    (r.macs, r.p50_ms)
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
    ax.set_xlabel("multiply-accumulates per inference (MACs)")
    ax.set_ylabel("latency p50 (ms)")
    ax.set_title("One-layer latency against its arithmetic")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def speedups(table, path: Path) -> Path:
    plt = _pyplot()
    import numpy as np

    shapes = list(dict.fromkeys(s["shape"] for s in table))
    series = list(dict.fromkeys((s["runtime"], s["precision"]) for s in table))
    fig, ax = plt.subplots(figsize=(max(7.5, 0.7 * len(shapes) + 3), 5))
    width = 0.8 / (len(series) + 1)
    x = np.arange(len(shapes))
    theoretical = {s["shape"]: s["theoretical_speedup"] for s in table}
    ax.bar(
        x,
        [theoretical[s] for s in shapes],
        width,
        color="lightgray",
        edgecolor="black",
        label="theoretical (MAC ratio)",
    )
    for i, (runtime, precision) in enumerate(series, 1):
        values = {
            s["shape"]: s["measured_speedup"] for s in table if (s["runtime"], s["precision"]) == (runtime, precision)
        }
        ax.bar(
            x + i * width,
            [values.get(s, 0) for s in shapes],
            width,
            color=PRECISION_COLORS.get(precision),
            alpha=0.6 + 0.4 * (runtime == "litert"),
            label=f"measured, {runtime} {precision}",
        )
    ax.axhline(1, color="black", linewidth=0.8)
    ax.set_xticks(x + width * len(series) / 2)
    ax.set_xticklabels(shapes, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("speedup of separable over regular (x)")
    ax.set_yscale("log")
    ax.set_title("Separable convolution: measured vs theoretical speedup, per layer shape")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    return _save(fig, path)


def roofline(rows, roofs, path: Path) -> Path:
    plt = _pyplot()
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
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
            label=f"roof {roof.runtime} {roof.precision}: {roof.compute_gops:.3g} G op/s, "
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
        ax.scatter([], [], marker="o", color="gray", alpha=0.3, label="faint: not a valid measurement")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (operations per byte moved)")
    ax.set_ylabel("achieved throughput (G op/s; 2 ops per MAC)")
    ax.set_title("Roofline: every layer against the measured roofs")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def time_breakdown(breakdown: dict, path: Path) -> Path:
    """breakdown: {model label: {kind: (time share, MAC share)}} -> side-by-side stacked bars."""
    plt = _pyplot()
    labels = list(breakdown)
    fig, ax = plt.subplots(figsize=(max(7.5, 2.4 * len(labels) + 3), 5.5))
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
    ax.set_xticklabels([f"{label}\n(time | MACs)" for label in labels], fontsize=7, rotation=20, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("share of time (solid) or of MACs (hatched), %")
    ax.set_title("Where the time goes, next to where the arithmetic is")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def scatter(
    points: list[dict],
    x: str,
    y: str,
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    front: bool = False,
) -> Path:
    """Labelled points (dicts with 'label', x, y); ``front`` draws the Pareto front (low x, high y)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for p in points:
        ax.scatter(p[x], p[y], s=40)
        ax.annotate(p["label"], (p[x], p[y]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    if front and points:
        best, frontier = -1.0, []
        for p in sorted(points, key=lambda p: (p[x], -p[y])):
            if p[y] > best:
                frontier.append(p)
                best = p[y]
        ax.plot([p[x] for p in frontier], [p[y] for p in frontier], "--", color="gray", label="Pareto front")
        ax.legend(fontsize=8)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)
