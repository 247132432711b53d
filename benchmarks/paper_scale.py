"""edgex's own cost around the libraries at paper scale: the `paper` Xception (22.9 M parameters, 299 px, random
weights, 10 classes, the digits as data) through the real commands, each in its own process as a user runs it.

For each command: its wall time, the library's own time inside it (conversion, calibration; from the command's JSON
and the artifact's metadata) plus the fixed cost of starting Python and loading the model, and the ratio of the two
(target: convert <= 3x). Loading is timed twice: as edgex loads (reading the .keras archive from memory) and as the
library alone does (``tf_keras.models.load_model``, 5x slower on this file); the ratio is given against both, the
second being the libraries' own time that the target is about. For eval: throughput in images/s (the samples
run through the model; loading it and preparing it for batches are its setup, given beside) against the runtime's
best batched throughput on the same file with the same threads (target: eval >= 80% of it), and against `edgex
bench` (batch 1).

The commands share a fresh store of source outputs (EDGEX_CACHE_DIR), as a user's first session with the model does:
the first convert runs Keras on its parity samples, later commands read those outputs.

Usage: python -m benchmarks.paper_scale [--threads 2] [--only convert,quantize,eval]
Run commands one at a time: the paper model needs a few GB of memory per process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._paper import CACHE, paper_keras

CONVERTS = (("tflite", "fp32"), ("tflite", "int8"), ("tflite", "dynamic"), ("onnx", "fp32"), ("onnx", "int8"))
LOAD = "from converters import load_source; load_source({path!r})"
# The bare script a user writes to convert without edgex: Python's start and the TensorFlow import count on both sides.
BARE = """
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np, tensorflow as tf, tf_keras
path, out, precision = sys.argv[1:4]
model = tf_keras.models.load_model(path, compile=False)
converter = tf.lite.TFLiteConverter.from_keras_model(model)
if precision == "int8":
    from edgex.data import load_dataset
    images, _ = load_dataset("digits", 299).train.take(100, seed=0).arrays()
    samples = images.astype(np.float32) / 127.5 - 1
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s[None]] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
open(out, "wb").write(converter.convert())
"""
LIBRARY_LOAD = "import tf_keras; tf_keras.models.load_model({path!r}, compile=False)"


def _run(args: list[str]) -> tuple[float, dict | None, str]:
    """(wall seconds, the JSON the command printed, its output) of one command in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - start
    out = proc.stdout
    data = None
    if "{" in out:
        try:
            data = json.loads(out[out.index("{") :])
        except json.JSONDecodeError:
            data = None
    if proc.returncode not in (0, 3):  # 3: a parity or gate verdict, still a measurement
        print(f"  {' '.join(args[1:4])}: exit {proc.returncode}: {(proc.stderr or out).strip()[-300:]}")
    return wall, data, out + proc.stderr


def edgex(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgex", *args]


def _row(name: str, wall: float, library: float | None, fixed: tuple[float, float], extra: str = "") -> None:
    """``fixed``: (start and load as edgex does, as the library alone does)."""
    if library is None:
        print(f"{name:32} wall {wall:7.1f} s  library -        {extra}")
        return
    ours, theirs = (wall / (library + f) for f in fixed)
    print(f"{name:32} wall {wall:7.1f} s  library {library:6.1f} s  ratio {ours:4.2f}x / {theirs:4.2f}x  {extra}")


def _conversion_seconds(artifact: Path) -> float | None:
    from devices.metadata import read_metadata

    timing = read_metadata(artifact).timing
    return timing.conversion_s if timing else None


def _parity_text(parity: dict) -> str:
    text = f"parity {'passed' if parity.get('passed') else 'FAILED'} on {parity.get('samples')} samples"
    if parity.get("interval"):
        low, high = parity["interval"]
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def converts(model: Path, work: Path, fixed: tuple[float, float]) -> dict[str, Path]:
    made = {}
    for to, precision in CONVERTS:
        out = work / f"paper_{precision}.{'onnx' if to == 'onnx' else 'tflite'}"
        wall, data, output = _run(
            edgex(
                "convert",
                str(model),
                "--to",
                to,
                "--precision",
                precision,
                "--data",
                "digits",
                "--out",
                str(out),
                "--force",
                "--json",
            )
        )
        if data is None:
            print(f"convert {to} {precision}: no JSON; {output.strip()[-300:]}")
            continue
        made[f"{to}-{precision}"] = out
        _row(f"convert --to {to} --precision {precision}", wall, data["seconds"], fixed, _parity_text(data["parity"]))
        if to == "tflite" and precision in ("fp32", "int8"):
            _versus_bare(model, work, precision, wall, out)
    return made


def _versus_bare(model: Path, work: Path, precision: str, wall: float, artifact: Path) -> None:
    """The convert against the bare script (load with tf-keras, convert with TFLite's converter, write), both in a
    fresh process, and where edgex's rest goes (the artifact's recorded timing)."""
    from devices.metadata import read_metadata
    from devices.sysinfo import cpu_features

    bare, _, _ = _run([sys.executable, "-c", BARE, str(model), str(work / f"bare_{precision}.tflite"), precision])
    timing = read_metadata(artifact).timing
    parts = f"loading {timing.loading_s:.1f} s, conversion {timing.conversion_s:.1f} s, parity {timing.parity_s:.1f} s"
    print(f"  vs the bare script ({bare:.1f} s): {wall / bare:.2f}x (target <= 1.5x) on {', '.join(cpu_features())};"
          f" edgex's {wall:.1f} s: {parts}, the rest Python, TensorFlow and the data")  # fmt: skip


def quantize(model: Path, work: Path, fixed: tuple[float, float]) -> None:
    out = work / "quantize_int8"
    wall, data, output = _run(
        edgex("quantize", str(model), "--mode", "int8", "--data", "digits", "--out", str(out), "--force", "--json")
    )
    if data is None:
        print(f"quantize int8: no JSON; {output.strip()[-300:]}")
        return
    times = [_conversion_seconds(Path(p)) for p in (data["artifact"], data["float_artifact"])]
    library = None if None in times else sum(times)
    _row(
        "quantize --mode int8",
        wall,
        library,
        fixed,
        f"top-1 {data['float_top1']:.3f} -> {data['quant_top1']:.3f} (target < 120 s)",
    )


BATCHED = """
import json, sys, time
import devices
path, threads = sys.argv[1], int(sys.argv[2])
best = 0.0
with devices.load_model(path, threads=threads) as model:
    for batch in (8, 32):
        x = model.sample_inputs(batch)[0].astype("float32")
        model.predict_all(x)  # warm-up (and the batch-1 probe)
        for _ in range(3):
            start = time.perf_counter()
            model.predict_all(x)
            best = max(best, batch / (time.perf_counter() - start))
print(json.dumps({"images_per_s": best}))
"""


def _bench_rate(path: Path, threads: int) -> float:
    """`edgex bench`'s throughput (batch 1, as it times) of ``path``."""
    bench_file = path.with_suffix(".bench.json")
    args = ["--threads", str(threads), "--runs", "10", "--min-seconds", "5", "--json", str(bench_file), "--force"]
    _run(edgex("bench", str(path), *args))
    try:
        return json.loads(bench_file.read_text())["results"][0]["images_per_s"]
    except (OSError, KeyError, IndexError, json.JSONDecodeError):
        return float("nan")


def _batched_rate(path: Path, threads: int) -> float:
    """The runtime's best throughput on batches of 8 and 32 random inputs, nothing around it (the most eval could
    reach)."""
    _, data, _ = _run([sys.executable, "-c", BATCHED, str(path), str(threads)])
    return data["images_per_s"] if data else float("nan")


def evals(model: Path, made: dict[str, Path], threads: int, fixed: tuple[float, float]) -> None:
    files = {"keras": model, **{k: made[k] for k in ("tflite-int8", "tflite-fp32", "onnx-fp32") if k in made}}
    for name, path in files.items():
        wall, data, output = _run(edgex("eval", str(path), "--data", "digits", "--threads", str(threads), "--json"))
        if data is None:
            print(f"eval {name}: no JSON; {output.strip()[-300:]}")
            continue
        rate = data["samples"] / data["seconds"]
        bench, batched = _bench_rate(path, threads), _batched_rate(path, threads)
        _row(
            f"eval {name} --threads {threads}",
            wall,
            data["seconds"],
            fixed,
            f"{rate:.2f} img/s: {rate / batched:.0%} of batched {batched:.2f}, {rate / bench:.0%} of bench {bench:.2f}"
            f" (setup {data.get('setup_seconds', 0):.1f} s)",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="convert,quantize,eval")
    args = parser.parse_args()
    only = set(args.only.split(","))
    os.environ["EDGEX_CACHE_DIR"] = tempfile.mkdtemp(prefix="edgex-paper-scale-")
    model = paper_keras()
    work = CACHE / "paper_scale"
    work.mkdir(parents=True, exist_ok=True)
    fixed = tuple(_run([sys.executable, "-c", code.format(path=str(model))])[0] for code in (LOAD, LIBRARY_LOAD))
    print(f"paper model {model} ({model.stat().st_size / 2**20:.0f} MiB); start Python + load it: {fixed[0]:.1f} s")
    print(f"(with tf_keras.models.load_model instead: {fixed[1]:.1f} s); ratios: wall / (library + either)")
    made = converts(model, work, fixed) if "convert" in only else {}
    if "quantize" in only:
        quantize(model, work, fixed)
    if "eval" in only:
        if not made:
            made = {f"{t}-{p}": work / f"paper_{p}.{'onnx' if t == 'onnx' else 'tflite'}" for t, p in CONVERTS}
            made = {k: v for k, v in made.items() if v.exists()}
        evals(model, made, args.threads, fixed)


if __name__ == "__main__":
    main()
