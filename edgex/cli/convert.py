"""``edgex convert``: Keras/SavedModel -> TFLite, ONNX, SavedModel, Edge TPU, with a parity check."""

from __future__ import annotations

from typing import Annotated

import typer

from converters.registry import BATCHES, CALIBRATION_SAMPLES, FORMATS, IO_TYPES, ONNX_INT8_ROUTES
from edgex.cli import options as o

To = o.choices("To", FORMATS)
ExportPrecision = o.choices("ExportPrecision", dict.fromkeys(p for t in FORMATS.values() for p in t.precisions))
Io = o.choices("Io", IO_TYPES)
Batch = o.choices("Batch", BATCHES)
OnnxInt8Route = o.choices("OnnxInt8Route", ONNX_INT8_ROUTES)

PARITY_FAILED = 3


def convert(
    model: Annotated[str, typer.Argument(help="A Keras model file (.keras, .h5) or a SavedModel folder.")],
    to: Annotated[To, typer.Option("--to", help="Target format.")],
    precision: Annotated[
        ExportPrecision | None,
        typer.Option(help="fp32, fp16 (weights), dynamic (int8 weights), int8 [default: fp32; int8 for edgetpu]."),
    ] = None,
    data: Annotated[
        str | None, o.data_option("calibration and parity [default: the data the model was trained on]")
    ] = None,
    calib_samples: Annotated[int, typer.Option(help="Calibration samples for int8.")] = CALIBRATION_SAMPLES,
    parity_samples: Annotated[
        int | None,
        typer.Option(help="Check parity on exactly N samples [default: up to 256, until decided at 95%]."),
    ] = None,
    io: Annotated[Io | None, typer.Option(help="Input/output type of int8 models (Edge TPU: uint8).")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    batch: Annotated[Batch, typer.Option(help="Batch dimension: 1 or dynamic.")] = Batch("1"),
    onnx_int8_route: Annotated[
        OnnxInt8Route, typer.Option(help="ONNX int8: qdq (ONNX Runtime) or tflite.")
    ] = OnnxInt8Route("qdq"),
    keep_float: Annotated[
        str | None, typer.Option(help="int8 TFLite: comma-separated layers to keep in float.")
    ] = None,
    preprocessing: o.PreprocessingOpt = None,
    out: Annotated[str | None, typer.Option(help="Output path (default: next to MODEL).")] = None,
    force: o.Force = False,
    json_out: o.Json = False,
):
    """Convert MODEL and check the result against it in its own runtime (LiteRT, ONNX Runtime)."""
    from edgex.artifacts.convert import export_model
    from edgex.cli.render import print_json

    result = export_model(
        model,
        to.value,
        precision.value if precision else None,
        data=data,
        calib_samples=calib_samples,
        parity_samples=parity_samples,
        io=io.value if io else None,
        opset=opset,
        batch=batch.value,
        out=out,
        force=force,
        onnx_int8_route=onnx_int8_route.value,
        keep_float=tuple(k for k in (keep_float or "").split(",") if k),
        preprocessing=preprocessing.value if preprocessing else None,
    )
    if json_out:
        print_json(result.to_dict())
    else:
        show_conversion(result)
    if not result.parity.passed:
        raise typer.Exit(PARITY_FAILED)


def show_conversion(result) -> None:
    from edgex.cli.render import console, human_bytes, table, warn

    p = result.parity
    rows = [
        ("file", result.path),
        ("format / precision", f"{result.target} / {result.precision}"),
        (
            "size",
            f"{human_bytes(result.size_bytes)} ({result.size_ratio:.1%} of {human_bytes(result.source_size_bytes)})",
        ),
        ("conversion time", f"{result.seconds:.1f} s"),
        ("parity", p.describe()),
        ("max / mean abs diff", f"{p.max_abs_diff:.3g} / {p.mean_abs_diff:.3g}"),
        ("output SNR / cosine", f"{p.snr_db:.1f} dB / {p.cosine:.5f}"),
        (
            "top-1 agreement",
            p.describe_agreement()
            + ("" if p.top1_meaningful else " (not meaningful: float top-1 margins below the output's resolution)"),
        ),
        ("metadata", result.metadata_path),
    ]
    if result.details.get("edgetpu_model"):
        rows.append(("Edge TPU model", result.details["edgetpu_model"]))
    console.print(table("conversion", ["", ""], rows, justify_right=[]))
    report = result.details.get("edgetpu")
    if report:
        cpu = [op for op in report["ops"] if not op["on_edgetpu"]]
        if cpu:
            console.print(
                table(
                    "ops that fall back to the CPU",
                    ["#", "op", "why"],
                    [(op["index"], op["op"], op["reason"]) for op in cpu[:20]],
                    justify_right=[0],
                )
            )
    for line in result.notes:
        (warn if "FAILED" in line else console.print)(line)


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)
