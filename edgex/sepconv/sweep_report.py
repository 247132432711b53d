"""What `edgex sweep` writes: the separable-over-regular speedup table, the JSON, CSV, plots and summary.md of a
sweep, and reading a sweep.json back."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

from edgex.artifacts.latency import invalid_note, write_study
from edgex.sepconv.spectrum import is_segments, plot_spectrum, spectrum_markdown
from edgex.sepconv.sweep_results import SweepResult


def speedup_table(rows) -> list[dict]:
    """Per shape, runtime and precision: separable speedup over regular, measured and theoretical."""
    by_key = {(r.shape, r.runtime, r.precision, r.variant): r for r in rows}
    table = []
    for (shape, runtime, precision, variant), regular in by_key.items():
        if variant != "regular" or (shape, runtime, precision, "separable") not in by_key:
            continue
        separable = by_key[(shape, runtime, precision, "separable")]
        measured = regular.p50_ms / separable.p50_ms
        theoretical = regular.macs / separable.macs
        entry = {
            "shape": shape,
            "runtime": runtime,
            "precision": precision,
            "regular_ms": regular.p50_ms,
            "separable_ms": separable.p50_ms,
            "measured_speedup": measured,
            "theoretical_speedup": theoretical,
            "efficiency": measured / theoretical,
            "count": regular.count,
            "valid": regular.valid and separable.valid,
        }
        for part in ("depthwise", "pointwise"):
            if (shape, runtime, precision, part) in by_key:
                entry[f"{part}_ms"] = by_key[(shape, runtime, precision, part)].p50_ms
        table.append(entry)
    return table


def write_sweep(result: SweepResult, out_dir: Path, *, plots: bool = True) -> SweepResult:
    files = {
        "sweep": out_dir / "sweep.json",
        "bench": out_dir / "bench.json",
        "csv": out_dir / "sweep.csv",
        "summary": out_dir / "summary.md",
    }
    if plots:
        from edgex.plots import save

        for name, draw in sweep_plots(result.rows, result.roofs, result.speedups).items():
            files[name] = save(draw(), out_dir / f"{name}.png")
    result = replace(result, files={k: str(v) for k, v in files.items()})
    write_study(files, result.bench, summary_markdown(result), "sweep", result.to_dict())
    return result


def sweep_plots(rows, roofs, speedups) -> dict[str, Callable]:
    """The sweep's plots, each drawn when called: file stem -> a function returning the figure."""
    from edgex import plots

    drawn: dict[str, Callable] = {}
    if any(not is_segments(r.variant) for r in rows):  # a --segments-only sweep has no variant rows
        drawn["latency_vs_macs"] = partial(plots.latency_vs_macs, rows)
        title = "Separable over regular convolution, per layer shape: measured speedup vs the MAC ratio"
        drawn["speedup"] = partial(plots.speedups, speedups, title=title)
    drawn["roofline"] = partial(plots.roofline, rows, roofs)
    if any(is_segments(r.variant) for r in rows):
        drawn["spectrum_latency"] = partial(plot_spectrum, rows)
        drawn["spectrum_macs"] = partial(plot_spectrum, rows, value="macs")
    return drawn


def summary_markdown(result: SweepResult) -> str:
    lines = ["# Separable vs regular convolutions, layer by layer", ""]
    lines += [
        "## Measured roofs",
        "",
        "| runtime | precision | compute (G op/s) | bandwidth (GB/s) | ridge (op/byte) |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r.runtime} | {r.precision} | {r.compute_gops:.1f} | {r.bandwidth_gbs:.1f} | {r.ridge:.1f} |"
        for r in result.roofs
    ]
    lines += [
        "",
        "## Separable speedup over regular, per shape",
        "",
        "| shape | runtime | precision | regular ms | separable ms | measured | theoretical | efficiency |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {s['shape']} | {s['runtime']} | {s['precision']} | {s['regular_ms']:.3f} | {s['separable_ms']:.3f} "
        f"| {s['measured_speedup']:.2f}x{'' if s['valid'] else ' *'} | {s['theoretical_speedup']:.2f}x "
        f"| {s['efficiency']:.0%} |"
        for s in result.speedups
    ]
    lines += [
        "",
        "## Every layer",
        "",
        "| shape | variant | runtime | precision | MACs | op/byte | p50 ms | G op/s | of roof |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.shape} | {r.variant} | {r.runtime} | {r.precision} | {r.macs / 1e6:.1f} M | {r.intensity:.1f} | "
        f"{r.p50_ms:.3f}{'' if r.valid else ' *'} | {r.gops:.1f} | {r.roof_fraction:.0%} |"
        for r in result.rows
    ]
    if any(r.roof_fraction > 1 for r in result.rows):
        lines += [
            "",
            "A fraction above 100% is a layer whose data stays in cache: the bandwidth roof is measured on "
            "a tensor larger than the caches (DRAM's).",
        ]
    if any(r.runtime == "onnxruntime" for r in result.rows):
        lines += [
            "",
            "ONNX Runtime layers run in NCHW without tf2onnx's layout transposes (as inside a whole model); "
            "int8 layers take and give float (QDQ models): their time includes quantizing the input and "
            "dequantizing the output, and their bytes count those tensors as float.",
        ]
    spectrum = spectrum_markdown(result.rows)
    if spectrum:
        lines += ["", *spectrum]
    note = invalid_note(sum(not r.valid for r in result.rows), len(result.rows))
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def load_sweep(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
