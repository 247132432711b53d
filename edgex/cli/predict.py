"""``edgex predict``: the top classes of images by any model edgex writes, on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

from edgex.cli import options as o


def predict(
    model: Annotated[str, typer.Argument(help="A .keras, .tflite (fp32, int8, Edge TPU) or .onnx model.")],
    images: Annotated[list[str], typer.Argument(help="Image files or folders of images.")],
    top_k: Annotated[int, typer.Option("--top-k", help="Classes to show per image.")] = 3,
    preprocessing: o.PreprocessingOpt = None,
    runtime: o.RuntimeOpt = o.Runtime("auto"),
    device: o.Device = "cpu",
    threads: o.Threads = None,
    json_out: o.Json = False,
):
    """Classify images with MODEL, using its recorded preprocessing and class names."""
    from edgex.artifacts.predict import predict_images
    from edgex.cli.render import console, note, print_json

    result = predict_images(
        model,
        images,
        top_k=top_k,
        preprocessing=preprocessing.value if preprocessing else None,
        runtime=runtime.value,
        device=device,
        threads=threads,
    )
    if json_out:
        print_json(result.to_dict())
        return
    for line in result.notes:
        note(line)
    for p in result.predictions:
        console.print(f"{p.image}: " + ", ".join(f"{t.name} {t.score:.3f}" for t in p.top), highlight=False)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
