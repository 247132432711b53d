"""``edgex quantize`` and ``edgex prune``."""

from __future__ import annotations

from typing import Annotated

import typer

from converters.registry import CALIBRATION_SAMPLES
from edgex.cli import options as o
from edgex.optimize.prune import SCHEDULES
from edgex.optimize.quantize import MODES, QUANTIZE_FORMATS

GATE_FAILED = 3


Mode = o.choices("Mode", MODES)
QuantTarget = o.choices("QuantTarget", QUANTIZE_FORMATS)
Schedule = o.choices("Schedule", SCHEDULES)


def quantize(
    model: Annotated[str, typer.Argument(help="A Keras model file (QAT needs one) or a SavedModel folder.")],
    mode: Annotated[Mode, typer.Option(help="Post-training dynamic, float16, int8; or qat.")] = Mode("int8"),
    data: Annotated[
        str | None, o.data_option("calibration, QAT and accuracy [default: the data the model was trained on]")
    ] = None,
    to: Annotated[QuantTarget, typer.Option(help="Format of the quantized model.")] = QuantTarget("tflite"),
    epochs: Annotated[int, typer.Option(help="QAT fine-tuning epochs.")] = 2,
    lr: Annotated[float, typer.Option(help="QAT fine-tuning learning rate (Adam, cosine decay).")] = 5e-6,
    max_drop: Annotated[
        float | None, typer.Option(help="Fail (exit 3) when top-1 drops more points than this.")
    ] = None,
    layer_errors: Annotated[
        bool, typer.Option("--layer-errors", help="Table of the layers with the largest int8 quantization error.")
    ] = False,
    # The old spelling, kept for one release: it read as the global --debug (tracebacks).
    debug: Annotated[bool, typer.Option("--debug", hidden=True)] = False,
    keep_float: Annotated[
        str | None, typer.Option(help="Comma-separated layers to keep in float (int8 TFLite).")
    ] = None,
    auto_keep_float: Annotated[
        bool, typer.Option(help="Keep the worst layers in float until --max-drop holds.")
    ] = False,
    calib_samples: Annotated[int, typer.Option(help="Calibration samples.")] = CALIBRATION_SAMPLES,
    preprocessing: o.PreprocessingOpt = None,
    out: o.OutBesideModel = None,
    force: o.Force = False,
    json_out: o.Json = False,
):
    """Quantize MODEL and report top-1 before and after (through the artifact's runtime), sizes and the gate."""
    from edgex.cli.progress import TrainingProgress
    from edgex.cli.render import print_json
    from edgex.optimize.quantize import quantize as run_quantize

    report = run_quantize(
        model,
        mode.value,
        data=data,
        to=to.value,
        epochs=epochs,
        max_drop=max_drop,
        layer_errors=layer_errors or debug,
        keep_float=tuple(k for k in (keep_float or "").split(",") if k),
        auto_keep_float=auto_keep_float,
        calib_samples=calib_samples,
        lr=lr,
        out=out,
        force=force,
        progress=None if json_out else TrainingProgress("qat epoch"),
        preprocessing=preprocessing.value if preprocessing else None,
    )
    if json_out:
        print_json(report.to_json())
    else:
        _show_quantize(report)
    if report.gate_passed is False:
        raise typer.Exit(GATE_FAILED)


def _show_quantize(r) -> None:
    from edgex.cli.render import console, human_bytes, table, warn

    rows = [
        ("artifact", r.artifact),
        _data_row(r),
        ("top-1 float / quantized", f"{100 * r.float_top1:.2f}% / {100 * r.quant_top1:.2f}% ({r.samples} val samples)"),
        (
            "drop",
            f"{r.drop_points:.2f} points"
            + (f" (gate {r.max_drop:g}: {'passed' if r.gate_passed else 'FAILED'})" if r.max_drop is not None else ""),
        ),
        (
            "size fp32 / quantized",
            f"{human_bytes(r.float_size_bytes)} / {human_bytes(r.quant_size_bytes)} "
            f"({r.quant_size_bytes / r.float_size_bytes:.1%}, {r.compression:.2f}x smaller)",
        ),
    ]
    if r.qat:
        rows.append(("QAT Keras top-1", f"{100 * r.qat.top1:.2f}% after {r.qat.epochs} epoch(s) ({r.qat.keras_model})"))
    if r.parity:
        rows.append(
            (
                "agreement with source",
                f"top-1 {r.parity.describe_agreement()}, mean abs diff {r.parity.mean_abs_diff:.3g}",
            )
        )
    if r.kept_float:
        rows.append(("kept in float", ", ".join(r.kept_float)))
    console.print(table(f"quantize --mode {r.mode} --to {r.target}", ["", ""], rows, justify_right=[]))
    if r.layer_errors:
        console.print(_layer_error_table(r.layer_errors))
    if r.auto_keep_float:
        console.print(
            table(
                "--auto-keep-float steps",
                ["kept layer", "top-1", "drop", "size"],
                [
                    (s["kept"], f"{100 * s['top1']:.2f}%", f"{s['drop_points']:.2f}", human_bytes(s["size_bytes"]))
                    for s in r.auto_keep_float
                ],
            )
        )
    if r.latency_ms:
        console.print(
            f"latency p50: full int8 {r.latency_ms['full_int8_p50']:.3f} ms, with float layers "
            f"{r.latency_ms['selective_p50']:.3f} ms"
        )
    for note in r.notes:
        console.print(note)
    if r.gate_passed is False:
        warn(f"accuracy gate failed: drop {r.drop_points:.2f} points > --max-drop {r.max_drop:g}")


def _data_row(report) -> tuple[str, str]:
    """Which data a command used, and whether --data named it or the model's metadata did."""
    origin = "recorded in the model's metadata: the data it was trained on" if report.data_recorded else "--data"
    return ("data", f"{report.data} ({origin})")


def _layer_error_table(errors):
    from edgex.cli.render import table

    return table(
        "largest per-layer quantization errors (RMSE in quantization steps; ~0.29 is rounding alone)",
        ["layer", "op", "RMSE/scale", "max abs error", "scale"],
        [
            (
                d["layer"] or d["tensor"][:40],
                d["op"],
                f"{d['rmse_over_scale']:.3f}",
                f"{d['max_abs_error']:.3g}",
                f"{d['scale']:.3g}",
            )
            for d in errors[:10]
        ],
    )


def prune(
    model: Annotated[str, typer.Argument(help="A Keras model file.")],
    sparsity: Annotated[float, typer.Option(help="Target sparsity in (0, 1).")],
    data: Annotated[
        str | None, o.data_option("fine-tuning and accuracy [default: the data the model was trained on]")
    ] = None,
    schedule: Annotated[Schedule, typer.Option(help="polynomial (0 -> target) or constant.")] = Schedule("polynomial"),
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = 8,
    lr: Annotated[float, typer.Option(help="Fine-tuning learning rate (Adam, cosine decay).")] = 3e-4,
    pattern: Annotated[str | None, typer.Option(help="Structured sparsity: 2:4.")] = None,
    then_qat: Annotated[bool, typer.Option(help="Continue with pruning-preserving QAT and an int8 export.")] = False,
    out: o.OutBesideModel = None,
    force: o.Force = False,
    json_out: o.Json = False,
):
    """Magnitude pruning with tfmot; reports sparsity per layer, accuracy, raw and gzip sizes, measured latency."""
    from edgex.cli.progress import TrainingProgress
    from edgex.cli.render import print_json
    from edgex.optimize.prune import prune as run_prune

    report = run_prune(
        model,
        sparsity,
        data=data,
        schedule=schedule.value,
        epochs=epochs,
        pattern=pattern,
        then_qat=then_qat,
        lr=lr,
        out=out,
        force=force,
        progress=None if json_out else TrainingProgress("prune epoch"),
    )
    if json_out:
        print_json(report.to_json())
    else:
        _show_prune(report)


def _show_prune(report) -> None:
    from edgex.cli.render import console, human_bytes, table

    s = report.sizes
    rows = [
        ("pruned model", report.pruned_model),
        _data_row(report),
        (
            "sparsity",
            f"{report.sparsity_pruned_weights:.1%} of pruned kernels, {report.sparsity_all_kernels:.1%} of all "
            f"kernels (target {report.target_sparsity:.0%}, {report.schedule}"
            + (f", pattern {report.pattern}" if report.pattern else "")
            + ")",
        ),
        ("by kernel type", ", ".join(f"{k} {v:.1%}" for k, v in report.sparsity_by_kind.items())),
        ("schedule", f"{report.steps} steps, target at step {report.end_step}, every {report.frequency} steps"),
        (
            "top-1 before / after",
            f"{100 * report.float_top1:.2f}% / {100 * report.pruned_top1:.2f}% (drop {report.drop_points:.2f} points)",
        ),
        ("fp32 TFLite raw", f"{human_bytes(s['dense_tflite']['raw'])} -> {human_bytes(s['pruned_tflite']['raw'])}"),
        (
            "fp32 TFLite gzip",
            f"{human_bytes(s['dense_tflite']['gzip'])} -> {human_bytes(s['pruned_tflite']['gzip'])} "
            f"({report.gzip_ratio:.1%})",
        ),
        (
            "latency p50 (measured)",
            f"{report.latency_ms['dense_p50']:.3f} ms -> {report.latency_ms['pruned_p50']:.3f} ms",
        ),
    ]
    if report.then_qat:
        q = report.then_qat
        rows.append(
            (
                "prune-preserving QAT",
                f"int8 top-1 {100 * q.int8_top1:.2f}%, int8 weight sparsity "
                f"{q.int8_weight_sparsity:.1%} (float {q.float_sparsity:.1%}), "
                f"{human_bytes(q.int8_gzip)} gzip ({q.int8_model})",
            )
        )
    console.print(table("prune", ["", ""], rows, justify_right=[]))
    for note in report.notes:
        console.print(note)


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize)
    app.command("prune")(prune)
