"""``edgex tune``: the fastest artifact of a model within an accuracy budget, measured on the target device."""

from __future__ import annotations

from typing import Annotated

import typer

from edgex.cli import options as o

GATE_FAILED = 3


Model = Annotated[str, typer.Argument(help="The trained Keras model to tune (.keras or .h5).")]
TuneData = Annotated[
    str | None, o.data_option("fine-tuning, selection and the held-out check [default: the data MODEL records]")
]
Ssh = Annotated[
    str | None, typer.Option(help="USER@HOST[:PORT] of a board: latency measured there, by the bundle runner.")
]
Target = Annotated[
    str | None, typer.Option(help="Deploy target of the winner's bundle (rpi4, coral-usb...; with --ssh).")
]
MaxDrop = Annotated[float, typer.Option(help="Points of top-1 a candidate may lose against MODEL.")]
Budget = Annotated[
    str,
    typer.Option(
        help="Search time: 90s, 20m, 2h (the winner's checks come after); with --resume, the whole search's time."
    ),
]
Levers = Annotated[
    str | None, typer.Option(help="Network levers, comma-separated: drop-blocks, prune, resolution, student.")
]
Runtimes = Annotated[str | None, typer.Option(help="Runtimes to try, comma-separated [default: those for the device].")]
LayerErrors = Annotated[
    bool, typer.Option("--layer-errors", help="Also int8 with the 1, 2 or 4 most sensitive layers in float.")
]
Epochs = Annotated[int, typer.Option(help="The most epochs a changed network trains (students three times as many).")]
Storage = Annotated[
    str | None, typer.Option(help="Optuna storage URL shared by several workers [default: SQLite in --out].")
]
Seed = Annotated[int, typer.Option(help="Seed of the sampler and of training.")]
Trials = Annotated[
    int | None,
    typer.Option(help="Stop this worker after N candidates, if the budget lasts [default: the budget decides]."),
]
Resume = Annotated[bool, typer.Option("--resume", help="Go on with the tune in --out.")]


def tune(
    model: Model,
    data: TuneData = None,
    device: o.Device = "cpu",
    ssh: Ssh = None,
    ssh_config: o.SshConfig = None,
    remote_dir: o.RemoteDir = "edgex-tune",
    remote_python: o.RemotePython = "python3",
    target: Target = None,
    max_drop: MaxDrop = 1.0,
    budget: Budget = "20m",
    trials: Trials = None,
    levers: Levers = None,
    runtimes: Runtimes = None,
    threads: o.ThreadCounts = None,
    layer_errors: LayerErrors = False,
    epochs: Epochs = 12,
    storage: Storage = None,
    seed: Seed = 0,
    out: o.Out = "runs/tune",
    resume: Resume = False,
    force: o.Force = False,
    json_out: o.Json = False,
):
    """Search for the fastest artifact of MODEL whose top-1 stays within --max-drop points, measured on the device:
    runtimes, precisions, threads and runtime options on the unchanged network, and network changes (dropped
    blocks, pruned channels, a lower resolution, a distilled student). Exit 3 when no candidate passes."""
    from edgex.cli.progress import only
    from edgex.cli.render import console, print_json
    from edgex.progress import Note
    from edgex.tune import TuneConfig, parse_budget
    from edgex.tune import tune as run_tune

    config = TuneConfig(
        data=data,
        device=device,
        ssh=ssh,
        ssh_config=ssh_config,
        remote_dir=remote_dir,
        remote_python=remote_python,
        target=target,
        max_drop=max_drop,
        budget_s=parse_budget(budget),
        max_trials=trials,
        **({"levers": _names(levers)} if levers is not None else {}),
        runtimes=_names(runtimes),
        threads=_counts(threads),
        layer_errors=layer_errors,
        max_epochs=epochs,
        seed=seed,
        storage=storage,
    )
    show = None if json_out else only(Note, lambda event: console.print(event.text))
    result = run_tune(model, config, out, resume=resume, force=force, progress=show)
    if json_out:
        print_json(result.to_dict())
    else:
        _show(result)
    if result.winner is None:
        raise typer.Exit(GATE_FAILED)


def _names(text: str | None) -> tuple[str, ...]:
    return o.split_list(text or "")


def _counts(text: str | None) -> tuple[int, ...]:
    from devices.errors import EdgexError

    try:
        return tuple(int(n) for n in _names(text))
    except ValueError:
        raise EdgexError(f"--threads takes whole numbers separated by commas, e.g. 1,2,4; got {text!r}") from None


def _show(result) -> None:
    from edgex.cli.render import console, table
    from edgex.tune.report import LEVER_COLUMNS, lever_cells, winner_lines

    for line in winner_lines(result):
        console.print(line)
    console.print(table("what each lever bought", LEVER_COLUMNS, lever_cells(result.levers)))
    for note in result.notes:
        console.print(f"note: {note}")
    console.print(f"results in {result.out_dir} ({', '.join(result.files)})")


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)
