"""``edgex info``: versions, CPU, ISA features, GPUs and ONNX Runtime providers."""

from __future__ import annotations

from typing import Annotated

import typer

from edgex.cli import options as o


def info(
    json_out: o.Json = False,
    gpus: Annotated[bool, typer.Option("--gpus/--no-gpus", help="Import TensorFlow to list the GPUs it sees.")] = True,
):
    """Show versions of every relevant package, the CPU and its ISA features, and the GPUs."""
    from edgex.cli.render import console, print_json, table
    from edgex.info import system_info

    data = system_info(probe_gpus=gpus)
    if json_out:
        print_json(data)
        return
    rows = [("python", data["python"]), ("platform", data["platform"])]
    rows += [(name, version) for name, version in data["packages"].items()]
    cpu = data["cpu"]
    rows += [
        ("cpu", f"{cpu['model']} ({cpu['machine']}, {cpu['cores']} cores, {cpu['usable_cores']} usable)"),
        ("isa features", ", ".join(cpu["features"]) or "-"),
        ("tensorflow onednn", _onednn_line(data["onednn"])),
        ("grouped convolutions", (data["onednn"]["grouped"] or {}).get("line", "not probed (--no-gpus)")),
        ("board", data["board"] or "-"),
        ("onnxruntime providers", ", ".join(data["onnxruntime_providers"]) or "-"),
        (
            "tensorflow gpus",
            "not probed" if data["tensorflow_gpus"] is None else ", ".join(data["tensorflow_gpus"]) or "none",
        ),
    ]
    console.print(table("edgex info", ["what", "value"], rows, justify_right=[]))


def _onednn_line(onednn: dict) -> str:
    state = {True: "on", False: "off", None: "TensorFlow's default"}[onednn["on"]]
    return f"{state} ({onednn['reason']})"


def register(app: typer.Typer) -> None:
    app.command("info")(info)
