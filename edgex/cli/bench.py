"""``edgex bench`` and ``edgex devices``."""

from __future__ import annotations

from typing import Annotated

import typer

from edgex.cli import options as o


def bench(
    models: Annotated[list[str], typer.Argument(help="Model files (.tflite, .onnx, .keras) or SavedModel folders.")],
    device: o.Devices = None,
    runtime: o.RuntimeOpt = o.Runtime("auto"),
    threads: o.Threads = None,
    batch: Annotated[int, typer.Option(help="Batch size (models with a dynamic batch).")] = 1,
    warmup: Annotated[int, typer.Option(help="Warm-up runs.")] = 5,
    runs: Annotated[int, typer.Option(help="At least this many timed runs.")] = 50,
    min_seconds: Annotated[float, typer.Option(help="And at least this many seconds of timed runs.")] = 1.0,
    max_seconds: Annotated[float, typer.Option(help="Stop after this long even if short (flagged not valid).")] = 60.0,
    inputs: Annotated[str, typer.Option(help="random, or data:SPEC for real samples (data:digits).")] = "random",
    delegate_option: Annotated[list[str] | None, typer.Option(help="key=value for an external delegate.")] = None,
    json_file: o.JsonFile = None,
    csv_file: Annotated[str | None, typer.Option("--csv", help="Write results to this CSV file.")] = None,
    append: Annotated[bool, typer.Option(help="Append rows to existing --json/--csv files.")] = False,
    interleave: Annotated[
        bool,
        typer.Option(
            "--interleave",
            help="Time the models in turn in one process (A B, B A, ...) and print the latency ratio of the first "
            "to each other one with its 95% confidence interval.",
        ),
    ] = False,
    force: o.Force = False,
):
    """Latency statistics (p50/p90/p99, CI of the median, CV), throughput, load time and memory."""
    from devices.bench import BenchConfig
    from devices.errors import EdgexError
    from edgex.artifacts.latency import run_bench, write_results

    options = {}
    for item in delegate_option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise EdgexError(f"--delegate-option {item!r} is not key=value")
        options[key] = value
    config = BenchConfig(warmup=warmup, runs=runs, min_seconds=min_seconds, max_seconds=max_seconds, batch=batch)
    if interleave:
        _interleaved(
            models, device or ["cpu"], runtime.value, threads, config, inputs, (json_file, csv_file, append, force)
        )
        return
    results = run_bench(
        models,
        device or ["cpu"],
        runtime=runtime.value,
        threads=threads,
        config=config,
        inputs=inputs,
        delegate_options=options or None,
    )
    write_results(results, json_file, csv_file, append=append, force=force)
    show_results(results)


def _interleaved(models, devices, runtime, threads, config, inputs, files) -> None:
    from pathlib import Path

    from devices.errors import EdgexError
    from edgex.artifacts.latency import run_interleaved, write_results
    from edgex.cli.render import console

    if len(devices) != 1:
        raise EdgexError(f"--interleave runs on one device, got {len(devices)}: {', '.join(devices)}")
    results, ratios = run_interleaved(
        models, devices[0], runtime=runtime, threads=threads, config=config, inputs=inputs
    )
    json_file, csv_file, append, force = files
    write_results(results, json_file, csv_file, append=append, force=force)
    show_results(results, "interleaved benchmark")
    first = Path(models[0]).name
    for model, ratio in zip(models[1:], ratios):
        console.print(ratio.describe(first, Path(model).name))


def _row(r) -> tuple:
    """One benchmark result as the table's cells."""
    from pathlib import Path

    from edgex.cli.render import human_bytes

    lat = r.latency
    return (
        r.label or Path(r.model).name,
        f"{r.runtime}/{r.device}",
        r.threads or "-",
        r.batch,
        lat.n,
        f"{lat.p50:.3f} [{lat.median_ci95[0]:.3f}, {lat.median_ci95[1]:.3f}]",
        f"{lat.p90:.3f}",
        f"{lat.p99:.3f}",
        f"{lat.mean:.3f} ± {lat.std:.3f}",
        f"{lat.cv:.1%}",
        f"{r.images_per_s:,.1f}",
        f"{r.load_ms:.0f} / {r.first_ms:.2f}",
        f"{r.peak_rss_mb:.0f}",
        human_bytes(r.model_size_bytes),
        "yes" if r.valid else "NO",
    )


def show_results(results, title: str = "benchmark") -> None:

    from edgex.cli.render import console, table, warn

    rows = [_row(r) for r in results]
    console.print(
        table(
            title + " (ms; p50 with its 95% confidence interval)",
            [
                "model",
                "runtime/device",
                "thr",
                "batch",
                "runs",
                "p50 [95% CI]",
                "p90",
                "p99",
                "mean ± std",
                "CV",
                "img/s",
                "load / first",
                "peak RSS MB",
                "size",
                "valid",
            ],
            rows,
            justify_right=range(2, 14),
        )
    )
    if results:
        env = results[0].environment
        console.print(
            f"{env.get('cpu', '?')}, {env.get('cores', '?')} cores"
            + (f", governor {env['governor']}" if env.get("governor") else "")
            + (f", {env['temperature_c']:.0f} °C" if env.get("temperature_c") is not None else "")
            + f"; {', '.join(sorted({r.runtime_version for r in results if r.runtime_version}))}"
        )
    for r in results:
        for reason in r.invalid_reasons:
            warn(f"{r.label or r.model} on {r.device}: not valid: {reason}")


def list_devices(json_out: o.Json = False):
    """What this machine can run models on, with the names --device takes."""
    from dataclasses import asdict

    from devices import available_devices, sysinfo
    from edgex.cli.render import console, print_json, table

    found = available_devices()
    env = sysinfo.environment()
    if json_out:
        print_json({"devices": [asdict(d) for d in found], "environment": env})
        return
    console.print(
        table(
            "devices",
            ["--device", "kind", "runtimes", "description"],
            [(d.name, d.kind, ", ".join(d.runtimes), d.description) for d in found],
            justify_right=[],
        )
    )
    facts = [f"{k}: {v}" for k, v in env.items() if k in ("board", "governor", "temperature_c", "throttled", "os")]
    if facts:
        console.print("; ".join(facts))


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
    app.command("devices")(list_devices)
