"""Options shared by several commands, declared once."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from devices.preprocess import PREPROCESSINGS
from edgex.models.xception import CONV_KINDS, INTERMEDIATE_ACTIVATIONS


def choices(name: str, values) -> type[Enum]:
    """A str Enum for Typer from a library's table of valid values, so that the CLI never lists its own copy."""
    return Enum(name, {str(v).replace("-", "_").replace(":", "_"): str(v) for v in values}, type=str)


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
Data = Annotated[
    str,
    typer.Option("--data", help="digits (embedded), an image folder PATH, or tfds:NAME."),
]
RecordedData = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="digits, an image folder PATH or tfds:NAME [default: the data the model was trained on, as its "
        "metadata records].",
    ),
]
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
