"""``edgex study``: the paper's spectrum and ablations, trained with several seeds, with intervals and latency."""

from __future__ import annotations

from typing import Annotated

import typer

from edgex.cli import options as o


def study(
    name: Annotated[str, typer.Argument(help="spectrum, activation, residual or inception.")],
    seeds: Annotated[int, typer.Option(help="Trainings per variant (seeds 0..N-1).")] = 3,
    epochs: Annotated[int, typer.Option(help="Epochs per training.")] = 4,
    data: o.Data = "digits",
    preset: Annotated[
        str | None, typer.Option(help="Model preset (default: tiny; paper at 75 px for inception).")
    ] = None,
    segments: Annotated[str, typer.Option(help="The spectrum study's points.")] = "1,2,4,8,C/8,C/4,C/2,C",
    runtime: Annotated[str, o.runtime_list("Latency runtimes: litert,onnxruntime ('' for none).")] = (
        "litert,onnxruntime"
    ),
    precision: Annotated[str, typer.Option(help="Latency precisions: fp32,int8.")] = "fp32,int8",
    batch_size: Annotated[int, typer.Option(help="Training batch.")] = 32,
    out: Annotated[
        str | None, typer.Option(help="Output folder, default runs/study/NAME (a rerun skips finished trainings).")
    ] = None,
    force: o.Force = False,
):
    """Train every variant of a study with several seeds; report top-1 with 95% intervals, learning curves,
    parameters, MACs and latency, and whether the paper's orderings hold on this data."""
    from edgex.cli.progress import only
    from edgex.cli.render import console
    from edgex.progress import Note
    from edgex.study import StudyConfig, run_study
    from edgex.study.report import accuracy_table

    config = StudyConfig(
        study=name,
        seeds=seeds,
        epochs=epochs,
        data=data,
        preset=preset,
        segments=o.split_list(segments),
        runtimes=o.split_list(runtime),
        precisions=o.split_list(precision),
        batch_size=batch_size,
    )
    result = run_study(
        config, out or f"runs/study/{name}", force=force, progress=only(Note, lambda e: console.print(e.text))
    )
    console.print("\n".join(accuracy_table(result)), markup=False, highlight=False)
    for comparison in result.comparisons:
        console.print(f"- {comparison.sentence}", markup=False, highlight=False)
    console.print(f"study done in {result.seconds:.0f} s; results in {result.out_dir} ({', '.join(result.files)})")


def register(app: typer.Typer) -> None:
    app.command("study")(study)
