"""``edgex train`` and ``edgex eval``."""

from __future__ import annotations

from typing import Annotated

import typer

from edgex.cli import options as o
from edgex.training.trainer import OPTIMIZERS, PRECISIONS, STRATEGIES, TrainConfig
from edgex.training.trainer import train as run_train

Optimizer = o.choices("Optimizer", OPTIMIZERS)
Strategy = o.choices("Strategy", STRATEGIES)
Precision = o.choices("Precision", PRECISIONS)
OptimizerOpt = Annotated[Optimizer, typer.Option(help="adam, or paper (SGD 0.045, x0.94 every 2 epochs).")]
Weights = Annotated[
    str, typer.Option(help="Starting weights: none, imagenet (preset paper) or a .h5/.weights.h5/.keras file.")
]
FromModel = Annotated[
    str | None, typer.Option("--from", help="Fine-tune this Keras image classifier instead of a preset.")
]
HeadEpochs = Annotated[
    int,
    typer.Option(
        help="Fine-tuning phase 1: the most epochs the new head trains on cached backbone features; it stops early "
        "and keeps its best epoch (0 skips phase 1)."
    ),
]
RecomputeBn = Annotated[
    bool,
    typer.Option(
        help="Fine-tuning: recompute the backbone's BatchNormalization statistics on the training images first "
        "(for a backbone whose statistics never converged)."
    ),
]


def train(
    data: o.Data = "digits",
    preset: o.Preset = "mini",
    conv: o.ConvOpt = o.Conv("separable"),
    input_size: o.InputSize = None,
    width: o.Width = None,
    middle_blocks: o.MiddleBlocks = None,
    intermediate_activation: o.Intermediate = o.IntermediateActivation("none"),
    residual: o.Residual = True,
    segments: o.Segments = None,
    dropout: Annotated[float | None, typer.Option(help="Dropout before the classifier (paper: 0.5).")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs to train.")] = 20,
    batch_size: Annotated[int, typer.Option(help="Global batch size.")] = 32,
    optimizer: OptimizerOpt = Optimizer("adam"),
    lr: Annotated[float | None, typer.Option(help="Initial learning rate.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for weights, shuffling and the split.")] = 0,
    val_split: Annotated[float, typer.Option(help="Validation share when the data has no val/ folder.")] = 0.2,
    augment: Annotated[str, typer.Option(help="Comma-separated: crop, flip, or none.")] = "crop",
    strategy: Annotated[Strategy, typer.Option(help="tf.distribute strategy.")] = Strategy("auto"),
    precision: Annotated[Precision, typer.Option(help="Training precision.")] = Precision("float32"),
    strict: Annotated[bool, typer.Option(help="Unreadable images are an error instead of being skipped.")] = False,
    weights: Weights = "none",
    from_model: FromModel = None,
    head_epochs: HeadEpochs = 200,
    unfreeze: Annotated[str, typer.Option(help="Fine-tuning phase 2: top N blocks that train, or all.")] = "all",
    fine_tune_lr: Annotated[float, typer.Option(help="Fine-tuning phase 2's learning rate.")] = 1e-5,
    preprocessing: o.PreprocessingOpt = None,
    recompute_bn: RecomputeBn = False,
    out: o.Out = "runs/train",
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last finished epoch.")] = False,
    force: o.Force = False,
    json_out: o.Json = False,
):
    """Train Xception (or its regular-conv twin) and write OUT/model.keras with its metadata."""
    config = TrainConfig(
        data=data,
        preset=preset,
        model=_model_options(
            conv, input_size, width, middle_blocks, intermediate_activation, residual, segments, dropout, from_model
        ),
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer.value,
        lr=lr,
        seed=seed,
        val_split=val_split,
        augment=tuple(a for a in augment.split(",") if a and a != "none"),
        strategy=strategy.value,
        precision=precision.value,
        strict=strict,
        weights=weights,
        from_model=from_model,
        head_epochs=head_epochs,
        unfreeze=unfreeze,
        fine_tune_lr=fine_tune_lr,
        preprocessing=preprocessing.value if preprocessing else None,
        recompute_bn=recompute_bn,
    )
    _run(config, out, resume, force, json_out)


def _run(config, out, resume: bool, force: bool, json_out: bool) -> None:
    """Scan the data, train with the progress shown, then the summary (without the warnings shown already)."""
    _report_scan(config)
    progress = None if json_out else _training_progress()
    result = run_train(config, out, resume=resume, force=force, progress=progress)
    _show_result(result, json_out, shown=progress.warned if progress else ())


def _model_options(
    conv, input_size, width, middle_blocks, intermediate_activation, residual, segments, dropout, from_model
):
    """The model options given; with --from, those left at their defaults are not 'given'."""
    from edgex.models import XceptionConfig

    model = {
        **o.model_overrides(conv, input_size, None, width, middle_blocks, intermediate_activation, residual),
        "segments": segments,
        "dropout": dropout,
    }
    defaults = XceptionConfig().to_dict() if from_model else {}
    return {k: v for k, v in model.items() if v is not None and (k not in defaults or defaults[k] != v)}


def _show_result(result, json_out: bool, shown=()) -> None:
    """The training summary, then the notes not already shown (``shown``) while training."""
    from edgex.cli.render import console, human_count, print_json, table, warn

    if json_out:
        from dataclasses import asdict

        print_json(asdict(result))
        return
    if result.already_done:
        console.print(f"{result.model_path} is already trained ({result.epochs} epochs); nothing to resume")
    rows = [
        ("model", result.model_path),
        (
            "epochs",
            f"{result.epochs}"
            + (f" (resumed after epoch {result.resumed_from_epoch})" if result.resumed_from_epoch else ""),
        ),
        *(
            [("phases", " + ".join(f"{p['name']} {p.get('epochs_run', p['epochs'])}" for p in result.phases))]
            if len(result.phases) > 1
            else []
        ),
        ("parameters", human_count(result.params)),
        ("val top-1", f"{100 * result.val_top1:.2f}%"),
        ("val loss", f"{result.val_loss:.4f}"),
        ("training time", f"{result.seconds:.1f} s"),
    ]
    console.print(table("training summary", ["", ""], rows, justify_right=[]))
    for line in result.notes:
        if line not in shown:
            warn(line)


def _training_progress():
    """Epoch bars and lines, where the weights came from, and a line at the start of each phase of a fine-tuning."""
    from edgex.cli.progress import TrainingProgress
    from edgex.cli.render import console, note
    from edgex.progress import PhaseBegin, WeightsLoaded

    progress = TrainingProgress()

    def phase_begin(event: PhaseBegin) -> None:
        if event.phases > 1 or not event.text.startswith("training"):
            console.print(event.text)
        progress.label = f"phase {event.number} epoch" if event.phases > 1 else "epoch"

    def weights_loaded(event: WeightsLoaded) -> None:
        for line in event.report.summary_lines():
            note(line)

    progress.views.update({PhaseBegin: phase_begin, WeightsLoaded: weights_loaded})
    return progress


def _report_scan(config) -> None:
    """Scan an image folder before training and show what was found."""
    from pathlib import Path

    if config.data == "digits" or config.data.startswith("tfds:") or not Path(config.data).is_dir():
        return
    from edgex.cli.render import note
    from edgex.data import scan_folder

    _, report = scan_folder(config.data)
    for line in report.summary_lines():
        note(line)


def evaluate(
    model: Annotated[str, typer.Argument(help="A .keras, .tflite, .onnx file or SavedModel folder.")],
    data: o.Data = "digits",
    runtime: o.RuntimeOpt = o.Runtime("auto"),
    device: o.Device = "cpu",
    threads: o.Threads = None,
    split: Annotated[str, typer.Option(help="val or train.")] = "val",
    limit: Annotated[int | None, typer.Option(help="Evaluate on at most this many samples.")] = None,
    preprocessing: o.PreprocessingOpt = None,
    json_out: o.Json = False,
):
    """Top-1 and top-5 accuracy, per-class accuracy and the confusion matrix of any model format."""
    from edgex.artifacts.accuracy import evaluate_model
    from edgex.cli.render import console, print_json, table

    result = evaluate_model(
        model,
        data,
        runtime=runtime.value,
        device=device,
        threads=threads,
        split=split,
        limit=limit,
        preprocessing=preprocessing.value if preprocessing else None,
    )
    if json_out:
        print_json(result.to_dict())
        return
    acc = result.accuracy
    console.print(
        f"{result.model} on {result.data} ({result.split}, {acc.samples} samples) with {result.runtime} "
        f"on {result.device}: top-1 [bold]{100 * acc.top1:.2f}%[/bold], top-5 {100 * acc.top5:.2f}%"
        f" ({result.images_per_s:,.1f} images/s; {result.setup_seconds:.1f} s to load and prepare the model)"
    )
    for line in result.notes:
        console.print(line)
    names = acc.class_names
    rows = [
        (n, f"{100 * a:.1f}%" if a == a else "-", *acc.confusion[i])
        for i, (n, a) in enumerate(zip(names, acc.per_class))
    ]
    console.print(
        table(
            "per-class accuracy and confusion matrix (rows: true class, columns: predicted)",
            ["class", "accuracy", *names],
            rows,
        )
    )


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("eval")(evaluate)
