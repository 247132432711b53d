"""``edgex sweep`` (layer level) and ``edgex compare`` (model level): separable vs regular convolutions."""

from __future__ import annotations

from typing import Annotated

import typer

from edgex.cli import options as o


def sweep(
    input_size: Annotated[int, typer.Option(help="Input size of the Xception whose layer shapes are swept.")] = 299,
    shapes: Annotated[
        str, typer.Option(help="xception, a Keras model file, or a CSV/YAML file of h,w,c_in,c_out,k,stride.")
    ] = "xception",
    variants: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated: regular,separable,depthwise,pointwise (default: all, none with --segments)."
        ),
    ] = None,
    segments: Annotated[
        str | None,
        typer.Option(help="The spectrum: comma-separated segments G per separable shape, e.g. 1,2,4,8,C/8,C/4,C/2,C."),
    ] = None,
    precision: Annotated[str, typer.Option(help="Comma-separated: fp32,fp16,int8.")] = "fp32,int8",
    runtime: Annotated[str, o.runtime_list("Comma-separated: litert,onnxruntime,tensorflow.")] = "litert",
    device: o.Device = "cpu",
    threads: o.Threads = 1,
    out: o.Out = "runs/sweep",
    force: o.Force = False,
):
    """Time every convolution shape of Xception as regular, separable, depthwise and pointwise layers, with
    achieved GOP/s, arithmetic intensity and the fraction of the measured roofline."""
    from edgex.cli.progress import only
    from edgex.cli.render import console
    from edgex.models.costs import VARIANTS
    from edgex.progress import Measured
    from edgex.sepconv.sweep import SweepConfig
    from edgex.sepconv.sweep import sweep as run_sweep

    config = SweepConfig(
        input_size=input_size,
        shapes=shapes,
        variants=o.split_list(variants) if variants is not None else (() if segments else VARIANTS),
        segments=o.split_list(segments or ""),
        precisions=o.split_list(precision),
        runtimes=o.split_list(runtime),
        device=device,
        threads=threads,
    )

    def measured(event: Measured) -> None:
        i, n, row = event.index, event.total, event.row
        if console.is_terminal or i % 10 == 0 or i == n:
            console.print(
                f"[{i}/{n}] {row.shape} {row.variant} {row.runtime} {row.precision}: {row.p50_ms:.3f} ms, "
                f"{row.gops:.1f} G op/s ({row.roof_fraction:.0%} of roof)"
            )

    show_sweep(run_sweep(config, out, force=force, progress=only(Measured, measured)))


def show_sweep(result) -> None:
    """The roofs, the separable speedups, the spectrum and where the files are."""
    from edgex.cli.render import console, table

    console.print(
        table(
            "measured roofs",
            ["runtime", "precision", "compute G op/s", "bandwidth GB/s", "ridge op/B"],
            [
                (r.runtime, r.precision, f"{r.compute_gops:.1f}", f"{r.bandwidth_gbs:.1f}", f"{r.ridge:.1f}")
                for r in result.roofs
            ],
        )
    )
    if result.speedups:
        console.print(
            table(
                "separable speedup over regular (measured vs theoretical MAC ratio)",
                [
                    "shape",
                    "runtime",
                    "precision",
                    "regular ms",
                    "separable ms",
                    "measured",
                    "theoretical",
                    "efficiency",
                ],
                [
                    (
                        s["shape"],
                        s["runtime"],
                        s["precision"],
                        f"{s['regular_ms']:.3f}",
                        f"{s['separable_ms']:.3f}",
                        f"{s['measured_speedup']:.2f}x" + ("" if s["valid"] else " *"),
                        f"{s['theoretical_speedup']:.2f}x",
                        f"{s['efficiency']:.0%}",
                    )
                    for s in result.speedups
                ],
                justify_right=range(3, 8),
            )
        )
    show_spectrum(result.rows)
    _warn_invalid(sum(not r.valid for r in result.rows), len(result.rows))
    console.print(
        f"{len(result.rows)} layers measured in {result.seconds:.0f} s; results in {result.out_dir} "
        f"(sweep.json, bench.json, sweep.csv, summary.md, PNG plots)"
    )


def show_spectrum(rows) -> None:
    from edgex.cli.render import console, table
    from edgex.sepconv.spectrum import is_segments

    rows = [r for r in rows if is_segments(r.variant)]
    if rows:
        header = ["shape", "segments", "G", "runtime", "precision", "MACs", "p50 ms", "G op/s", "of roof", "ops placed"]
        cells = [
            (r.shape, r.variant.split(":", 1)[1], str(r.groups), r.runtime, r.precision, f"{r.macs / 1e6:.1f} M",
             f"{r.p50_ms:.3f}" + ("" if r.valid else " *"), f"{r.gops:.1f}", f"{r.roof_fraction:.0%}", r.placement)
            for r in rows
        ]  # fmt: skip
        console.print(table("the spectrum: k x k conv on G segments + 1x1", header, cells, justify_right=range(5, 9)))


def compare(
    preset: Annotated[
        str | None,
        typer.Option(
            help="Build Xception and its regular twin from this preset "
            "(random weights); 'none' to compare only --model files."
        ),
    ] = "mini",
    model: Annotated[list[str] | None, typer.Option("--model", help="Extra model files (repeatable).")] = None,
    precision: Annotated[str, typer.Option(help="Comma-separated: fp32,int8.")] = "fp32,int8",
    runtime: Annotated[str, o.runtime_list("Comma-separated: litert,onnxruntime.")] = "litert,onnxruntime",
    device: o.Device = "cpu",
    threads: o.Threads = None,
    data: Annotated[str | None, o.data_option("calibration and accuracy of trained models")] = None,
    breakdown: Annotated[bool, typer.Option(help="Per-op-type time breakdown.")] = True,
    out: o.Out = "runs/compare",
    force: o.Force = False,
):
    """Model-level A/B: Xception against its regular-convolution twin (and other models), per format and
    precision, with where the time goes by operation type."""
    from edgex.cli.progress import only
    from edgex.cli.render import console
    from edgex.progress import Measured
    from edgex.sepconv.compare import CompareConfig
    from edgex.sepconv.compare import compare as run_compare

    config = CompareConfig(
        preset=None if (preset or "none") == "none" else preset,
        models=tuple(model or ()),
        precisions=o.split_list(precision),
        runtimes=o.split_list(runtime),
        device=device,
        threads=threads,
        data=data,
        breakdown=breakdown,
    )
    result = run_compare(
        config,
        out,
        force=force,
        progress=only(
            Measured, lambda e: console.print(f"{e.row.label} {e.row.runtime} {e.row.precision}: {e.row.p50_ms:.3f} ms")
        ),
    )
    show_compare(result)


def show_compare(result) -> None:
    from edgex.cli.render import console, human_bytes, table

    console.print(
        table(
            "models",
            ["model", "runtime", "precision", "params", "MACs", "size", "p50 ms", "img/s", "top-1"],
            [
                (
                    r.label,
                    r.runtime,
                    r.precision,
                    f"{r.params / 1e6:.2f} M",
                    f"{r.macs / 1e6:.1f} M",
                    human_bytes(r.size_bytes),
                    f"{r.p50_ms:.3f}" + ("" if r.valid else " *"),
                    f"{r.images_per_s:.1f}",
                    f"{100 * r.top1:.2f}%" if r.top1 is not None else "-",
                )
                for r in result.rows
            ],
            justify_right=range(3, 9),
        )
    )
    if result.ab:
        console.print(
            table(
                "Xception vs its regular-convolution twin",
                ["runtime", "precision", "Xception ms", "twin ms", "measured speedup", "MAC ratio", "efficiency"],
                [
                    (
                        a.runtime,
                        a.precision,
                        f"{a.xception_ms:.3f}",
                        f"{a.twin_ms:.3f}",
                        f"{a.measured_speedup:.2f}x" + ("" if a.valid else " *"),
                        f"{a.theoretical_speedup:.2f}x",
                        f"{a.efficiency:.0%}",
                    )
                    for a in result.ab
                ],
                justify_right=range(2, 7),
            )
        )
    for label, runtimes in result.breakdown.items():
        rows = [
            (
                f"{runtime} {precision}",
                *(f"{100 * kinds[k]['time_share']:.0f}% / {100 * kinds[k]['mac_share']:.0f}%" for k in kinds),
            )
            for runtime, precisions in runtimes.items()
            for precision, kinds in precisions.items()
        ]
        kinds = next(iter(next(iter(runtimes.values())).values()))
        console.print(table(f"{label}: time share / MAC share", ["", *kinds], rows))
    _warn_invalid(sum(not r.valid for r in result.rows), len(result.rows))
    console.print(f"results in {result.out_dir} ({', '.join(sorted(result.files))}) after {result.seconds:.0f} s")


def _warn_invalid(flagged: int, total: int) -> None:
    from edgex.artifacts.latency import invalid_note
    from edgex.cli.render import warn

    note = invalid_note(flagged, total)
    if note:
        warn(note)


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
    app.command("compare")(compare)
