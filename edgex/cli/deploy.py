"""``edgex deploy`` and ``edgex verify``."""

from __future__ import annotations

from typing import Annotated

import typer

from edgex.cli import options as o
from edgex.deploy import DEPLOY_TARGETS

HOST_FAILED = 1


TargetName = o.choices("TargetName", DEPLOY_TARGETS)


def deploy(
    model: Annotated[str, typer.Argument(help="A .tflite (int8, or *_edgetpu.tflite for a Coral) or .onnx model.")],
    target: Annotated[TargetName, typer.Option(help="The board: decides threads, delegate and runtime.")],
    out: Annotated[str | None, typer.Option(help="Bundle path (default: next to MODEL).")] = None,
    ssh: Annotated[list[str] | None, typer.Option("--ssh", help="USER@HOST[:PORT] to run on (repeatable).")] = None,
    hosts: Annotated[str | None, typer.Option(help="File with one host per line.")] = None,
    remote_dir: o.RemoteDir = "edgex",
    bench: Annotated[bool, typer.Option("--bench/--no-bench", help="Benchmark on the device.")] = True,
    eval_data: Annotated[
        str | None, typer.Option(help="Pack validation images (digits, PATH...) and evaluate on the device.")
    ] = None,
    setup: Annotated[
        bool, typer.Option(help="Create a virtual environment on the device and install the requirements.")
    ] = False,
    remote_python: o.RemotePython = "python3",
    ssh_config: o.SshConfig = None,
    ssh_option: Annotated[list[str] | None, typer.Option(help="Extra ssh -o KEY=VALUE (repeatable).")] = None,
    runs: Annotated[int, typer.Option(help="Timed runs on the device.")] = 50,
    min_seconds: Annotated[float, typer.Option(help="Minimum timed seconds on the device.")] = 1.0,
    timeout: Annotated[float, typer.Option(help="Seconds allowed for each remote step.")] = 600.0,
    json_file: o.JsonFile = None,
    force: o.Force = False,
):
    """Build a bundle for a board (no TensorFlow needed on it) and optionally run it there over SSH."""
    from edgex.cli.progress import only
    from edgex.cli.render import console
    from edgex.deploy import SshOptions, build_bundle, deploy_remote, read_hosts
    from edgex.progress import Measured

    bundle = build_bundle(model, target.value, out, eval_data=eval_data, force=force)
    console.print(f"bundle {bundle.path}: {len(bundle.files)} files, runs {bundle.model} on {target.value}")
    for note in bundle.notes:
        console.print(f"note: {note}")
    if not (ssh or hosts):
        return
    if json_file:
        from devices.files import refuse_overwrite

        refuse_overwrite(json_file, force)
    opts = SshOptions(config=ssh_config, options=tuple(ssh_option or ()), timeout=timeout)
    results = deploy_remote(
        bundle,
        read_hosts(ssh or [], hosts),
        remote_dir=remote_dir,
        setup=setup,
        bench=bench,
        evaluate=bool(eval_data),
        runs=runs,
        min_seconds=min_seconds,
        remote_python=remote_python,
        opts=opts,
        progress=only(Measured, lambda e: console.print(_host_line(e.row))),
    )
    show_hosts(results)
    if json_file:
        _write_hosts(json_file, results)
    if not all(r.ok for r in results):
        raise typer.Exit(HOST_FAILED)


def _host_line(r) -> str:
    return f"{r.host}: {'ok' if r.ok else r.error} ({r.seconds:.0f} s)" + (f"; {r.runtime}" if r.runtime else "")


def _write_hosts(json_file: str, results) -> None:
    """The device results in the bench schema, with every host's row (errors included)."""
    from devices.bench import SCHEMA
    from devices.files import write_json_atomic

    write_json_atomic(
        json_file,
        {
            "schema": SCHEMA,
            "results": [r.bench.to_dict() for r in results if r.bench],
            "hosts": [r.to_dict() for r in results],
        },
    )


def show_hosts(results) -> None:
    from edgex.cli.render import console, table

    rows = []
    for r in results:
        env = r.identity.get("environment", {})
        if r.ok and r.bench is not None:
            lat = r.bench.latency
            timing = (
                f"{lat.p50:.3f}",
                f"{lat.p90:.3f}",
                f"{lat.cv:.1%}",
                f"{r.bench.images_per_s:.1f}",
                "yes" if r.bench.valid else "NO",
            )
        else:
            timing = ("-",) * 5
        accuracy = f"{100 * r.accuracy['top1']:.2f}%" if r.accuracy else "-"
        rows.append(
            (
                r.host,
                "ok" if r.ok else r.error,
                env.get("board") or env.get("cpu", "-"),
                env.get("os", "-"),
                *timing,
                accuracy,
                f"{env['temperature_c']:.0f}" if env.get("temperature_c") else "-",
            )
        )
    console.print(
        table(
            "on the devices (ms)",
            ["host", "status", "board / cpu", "os", "p50", "p90", "CV", "img/s", "valid", "top-1", "°C"],
            rows,
            justify_right=range(4, 11),
        )
    )


def verify(bundle: Annotated[str, typer.Argument(help="A bundle .tar.gz or an unpacked bundle folder.")]):
    """Check every file of a bundle against its manifest (SHA-256); unsafe archives are refused."""
    from edgex.cli.render import console
    from edgex.deploy import verify_bundle

    problems = verify_bundle(bundle)
    for problem in problems:
        console.print(problem)
    if problems:
        from devices.errors import EdgexError

        raise EdgexError(
            f"bundle {bundle} failed verification: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        )
    console.print(f"{bundle}: every file matches the manifest")


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
    app.command("verify")(verify)
