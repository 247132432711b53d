"""Options shared by several commands, declared once."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from devices.errors import EdgexError, choice_error
from devices.preprocess import PREPROCESSINGS
from devices.registry import DEVICE_NAMES, RUNTIMES, parse_device
from edgex.models.xception import CONV_KINDS, INTERMEDIATE_ACTIVATIONS


def choices(name: str, values) -> type[Enum]:
    """A str Enum for Typer from a library's table of valid values, so that the CLI never lists its own copy."""
    return Enum(name, {str(v).replace("-", "_").replace(":", "_"): str(v) for v in values}, type=str)


def split_list(value: str) -> tuple[str, ...]:
    """The items of a comma-separated option, blanks dropped."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _known_runtimes(value: str) -> str:
    for item in split_list(value):
        if item not in RUNTIMES:
            raise typer.BadParameter(str(choice_error("runtime", item, RUNTIMES)))
    return value


def _known_devices(value: str | list[str] | None):
    for device in [value] if isinstance(value, str) else value or ():
        try:
            parse_device(device)
        except EdgexError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def runtime_list(help: str):
    """--runtime for a command that runs several runtimes: comma-separated names, each one of the registry's (the
    command's library may allow fewer, and says so)."""
    return typer.Option("--runtime", callback=_known_runtimes, help=help)


Conv = choices("Conv", CONV_KINDS)
IntermediateActivation = choices("IntermediateActivation", INTERMEDIATE_ACTIVATIONS)


Preset = Annotated[str, typer.Option("--preset", help="Model preset: mini, paper or tiny (see 'edgex model summary').")]
ConvOpt = Annotated[Conv, typer.Option("--conv", help="separable (Xception) or regular (its twin).")]
InputSize = Annotated[int | None, typer.Option("--input-size", help="Input side in pixels (>= 32).")]
Classes = Annotated[int | None, typer.Option("--classes", help="Number of classes (>= 2).")]
Width = Annotated[float | None, typer.Option("--width", help="Channel multiplier (0, 4].")]
MiddleBlocks = Annotated[int | None, typer.Option("--middle-blocks", help="Middle-flow blocks (paper: 8).")]
Intermediate = Annotated[
    IntermediateActivation,
    typer.Option("--intermediate-activation", help="Activation between depthwise and pointwise (paper: none)."),
]
Residual = Annotated[bool, typer.Option("--residual/--no-residual", help="Residual shortcuts (paper: on).")]
Segments = Annotated[
    str | None,
    typer.Option("--segments", help="The spectrum: G channel segments per spatial conv (1, 2, 4, 8, C/8, ..., C)."),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
JsonFile = Annotated[str | None, typer.Option("--json", help="Write the results to this JSON file (the bench schema).")]
DATA_FORMS = "digits (embedded), an image folder PATH, or tfds:NAME"
Data = Annotated[str, typer.Option("--data", help=f"{DATA_FORMS}.")]


def data_option(purpose: str):
    """--data where it is optional: ``purpose`` says what the command uses it for and what it does without it."""
    return typer.Option("--data", help=f"{DATA_FORMS}: {purpose}.")


Runtime = choices("Runtime", ("auto", *RUNTIMES))
RuntimeOpt = Annotated[
    Runtime,
    typer.Option("--runtime", help="The runtime that runs the model (auto: the one for its format and device)."),
]
Device = Annotated[
    str, typer.Option("--device", callback=_known_devices, help=f"Where the model runs: {', '.join(DEVICE_NAMES)}.")
]
Devices = Annotated[
    list[str] | None,
    typer.Option(
        "--device", callback=_known_devices, help=f"Where the model runs: {', '.join(DEVICE_NAMES)} (repeatable)."
    ),
]
Threads = Annotated[int | None, typer.Option("--threads", help="Runtime threads (unset: the runtime's choice).")]
THREAD_COUNTS_HELP = "Thread counts to try, comma-separated (default: 1 to the device's cores)."
ThreadCounts = Annotated[str | None, typer.Option("--threads", help=THREAD_COUNTS_HELP)]
Out = Annotated[str, typer.Option("--out", help="Output folder.")]
OutBesideModel = Annotated[str | None, typer.Option("--out", help="Output folder (default: next to MODEL).")]
Preprocessing = choices("Preprocessing", PREPROCESSINGS)
PreprocessingOpt = Annotated[
    Preprocessing | None,
    typer.Option(
        "--preprocessing",
        help="How pixels become inputs: xception ([-1, 1]), caffe (BGR, mean subtracted), torch (ImageNet mean/std) "
        "or raw (0-255) [default: the model's recorded one].",
    ),
]
Force = Annotated[bool, typer.Option("--force", help="Overwrite existing outputs.")]
RemoteDir = Annotated[str, typer.Option("--remote-dir", help="Folder on the device (relative to the login's home).")]
RemotePython = Annotated[str, typer.Option("--remote-python", help="Python on the device.")]
SshConfig = Annotated[str | None, typer.Option("--ssh-config", help="An ssh_config file to use (ssh -F).")]


def model_overrides(conv: Conv, input_size, classes, width, middle_blocks, intermediate, residual) -> dict:
    return {
        "conv": conv.value,
        "input_size": input_size,
        "classes": classes,
        "width": width,
        "middle_blocks": middle_blocks,
        "intermediate_activation": intermediate.value,
        "residual": residual,
    }
