"""``edgex pipeline``: data -> trained, optimized, converted, evaluated, benchmarked model -> bundle and report."""

from __future__ import annotations

from typing import Annotated

import typer

from edgex.cli import options as o


def pipeline(
    config: Annotated[str | None, typer.Option("--config", help="Recipe YAML with the options of every stage.")] = None,
    data: Annotated[str | None, o.data_option("the data of every stage [default: the recipe's]")] = None,
    preset: Annotated[str | None, typer.Option(help="Model preset (mini, paper, tiny).")] = None,
    device: o.Devices = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (train.epochs).")] = None,
    out: Annotated[str, typer.Option(help="Run folder.")] = "runs/pipeline",
    resume: Annotated[bool, typer.Option(help="Skip stages whose inputs and options are unchanged.")] = False,
    force: o.Force = False,
):
    """Run the whole job on the embedded default (digits, mini, cpu) or your own recipe."""
    from edgex.cli.progress import TrainingProgress
    from edgex.cli.render import console, human_bytes, table
    from edgex.pipeline import resolve_recipe, run_pipeline

    recipe = resolve_recipe(config, {"data": data, "preset": preset, "devices": device, "train.epochs": epochs})

    def on_stage(record):
        where = " (in the background, beside the stages above)" if record.background else ""
        console.print(f"[bold]{record.name:<10}[/bold] {record.status:<8} {record.seconds:6.1f} s{where}")

    console.print(
        f"edgex pipeline -> {out} (preset {recipe.preset}, data {recipe.data}, devices {', '.join(recipe.devices)})"
    )
    result = run_pipeline(
        recipe, out, resume=resume, force=force, progress=TrainingProgress(say=console.print), on_stage=on_stage
    )
    rows = [
        (
            r.variant,
            human_bytes(r.size_bytes),
            f"{100 * r.top1:.2f}%",
            f"{r.p50_ms:.3f}" if r.p50_ms is not None else "-",
            f"{r.speedup_vs_keras:.1f}x" if r.speedup_vs_keras else "-",
        )
        for r in result.summary
    ]
    console.print(table("summary", ["variant", "size", "top-1", "p50 ms", "speedup vs fp32 Keras"], rows))
    console.print(f"done in {result.seconds:.0f} s: {result.out}/report.html")


def register(app: typer.Typer) -> None:
    app.command("pipeline")(pipeline)
