"""The benchmark loop's overhead: `edgex bench`'s timed loop against a bare `invoke()` loop on the same
LiteRT interpreter (bar: under 2% for the `paper` Xception int8 TFLite model on 2 threads).

Two measurements: (1) the paper model directly, the two loops alternated for several rounds so that drift of a
shared machine hits both (noisy at the 1% level on a busy machine); (2) the loop's own cost per iteration in
microseconds, measured on a one-layer model over many iterations, which is what the 2% is made of."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._paper import paper_export
from devices.bench import BenchConfig, measure
from devices.litert import LiteRTModel


def bare_loop(model: LiteRTModel, runs: int) -> float:
    """Seconds per invoke of a plain loop: inputs set once, then invoke() back to back."""
    model.set_inputs(model.sample_inputs(1))
    invoke = model._interp.invoke
    start = time.perf_counter()
    for _ in range(runs):
        invoke()
    return (time.perf_counter() - start) / runs


def edgex_loop(model: LiteRTModel, runs: int):
    result = measure(model, BenchConfig(warmup=2, min_warmup_seconds=0, runs=runs, min_seconds=0))
    return result.timed_seconds / result.latency.n, result


def one_layer_model() -> Path:
    from devices.tfkeras import keras, tensorflow

    tf, k = tensorflow(), keras()
    model = k.Sequential([k.Input((8, 8, 8)), k.layers.Conv2D(8, 1)])
    path = Path(tempfile.mkdtemp()) / "one_layer.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def main(rounds: int = 7, runs: int = 30) -> None:
    path, _ = paper_export("tflite", "int8")
    model = LiteRTModel(path, threads=2)
    bare_loop(model, 5)
    ratios, cvs = [], []
    for _ in range(rounds):
        bare = bare_loop(model, runs)
        ours, result = edgex_loop(model, runs)
        ratios.append(ours / bare)
        cvs.append(result.latency.cv)
        print(
            f"paper int8, 2 threads: bare {bare * 1e3:6.2f} ms/invoke   edgex loop {ours * 1e3:6.2f} ms/iteration"
            f"   ratio {ours / bare:.4f}   CV {result.latency.cv:.1%}"
        )
    print(
        f"paper int8: median ratio edgex/bare {statistics.median(ratios):.4f}; median CV {statistics.median(cvs):.1%}"
    )

    small = LiteRTModel(one_layer_model(), threads=1)
    extra = []
    for _ in range(rounds):
        bare = bare_loop(small, 20000)
        ours, _ = edgex_loop(small, 20000)
        extra.append(ours - bare)
    overhead = statistics.median(extra)
    paper_p50 = statistics.median(r for r in [edgex_loop(model, runs)[1].latency.p50 / 1e3])
    print(f"loop cost per iteration (one-layer model, 20,000 iterations): {overhead * 1e6:.2f} us")
    print(f"=> overhead on the paper int8 model: {overhead / paper_p50:.4%} of an inference (bar: < 2%)")


if __name__ == "__main__":
    main()
