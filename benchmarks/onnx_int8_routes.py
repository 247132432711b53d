"""Which ONNX int8 route edgex uses by default, from measurements: ONNX Runtime's static QDQ quantization of the
tf2onnx model ("qdq") against tf2onnx's conversion of the int8 TFLite model ("tflite"). For the trained mini
model on the digits: conversion time, file size, top-1 through ONNX Runtime, agreement with the float model and
latency (p50, 1 thread).

Usage: python -m benchmarks.onnx_int8_routes [MODEL.keras]   (trains the mini preset when no model is given)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def main() -> None:
    from devices.bench import BenchConfig, benchmark
    from edgex.artifacts.accuracy import evaluate_model
    from edgex.artifacts.convert import export_model
    from edgex.training.trainer import TrainConfig, train

    work = Path(tempfile.mkdtemp(prefix="edgex-onnx-routes-"))
    model = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(train(TrainConfig(preset="mini"), work / "train").model_path)
    )
    float_top1 = evaluate_model(model, "digits").accuracy.top1
    print(f"float Keras model: top-1 {100 * float_top1:.2f}%")
    for route in ("qdq", "tflite"):
        result = export_model(
            model, "onnx", "int8", data="digits", onnx_int8_route=route, out=work / f"int8_{route}.onnx", force=True
        )
        top1 = evaluate_model(result.path, "digits").accuracy.top1
        p50 = benchmark(result.path, threads=1, config=BenchConfig(runs=200, min_seconds=2)).latency.p50
        print(
            f"{route:7} conversion {result.seconds:5.1f} s  size {result.size_bytes / 2**20:5.2f} MiB  top-1 "
            f"{100 * top1:.2f}%  agreement with float {result.parity.top1_agreement:.1%}  p50 {p50:.3f} ms"
        )


if __name__ == "__main__":
    main()
