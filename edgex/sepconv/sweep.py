"""`edgex sweep`: separable vs regular convolutions layer by layer, on this device, runtime and precision.

For every convolution shape of Xception (or of a shapes file) and every variant (regular, separable, depthwise,
pointwise), a one-layer model is converted through ``converters`` and timed through ``devices``. Each layer is
placed on a roofline whose roofs are measured here: attainable compute from a large GEMM-shaped pointwise
convolution and memory bandwidth from a large elementwise operation, for the same runtime and precision.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from converters.onnx_graph import drop_layout_transposes
from devices.bench import BenchConfig, benchmark
from devices.errors import EdgexError, choice_error
from devices.files import refuse_overwrite
from edgex.models.costs import VARIANTS, ConvSpec
from edgex.progress import Measured, Progress
from edgex.sepconv.layer_shapes import load_shapes, model_shapes, resolve_shapes, variants_for, xception_shapes
from edgex.sepconv.spectrum import (
    is_segments,
    op_placement,
    segments_costs,
    segments_layer,
    segments_variant,
    spectrum_shapes,
)
from edgex.sepconv.sweep_report import load_sweep, speedup_table, summary_markdown, write_sweep
from edgex.sepconv.sweep_results import Roof, SweepResult, SweepRow

RUNTIME_PRECISIONS = {"litert": ("fp32", "fp16", "int8"), "onnxruntime": ("fp32", "int8"), "tensorflow": ("fp32",)}
SWEEP_BENCH = BenchConfig(warmup=2, min_warmup_seconds=0.05, runs=10, min_seconds=0.15, max_seconds=3.0)
COMPUTE_PROBE = ConvSpec(h=56, w=56, c_in=512, c_out=512, k=1)  # GEMM-shaped: a 3136 x 512 x 512 matrix product
BANDWIDTH_PROBE = (1, 512, 512, 64)  # 16.8 M elements through an elementwise add of a constant


@dataclass(frozen=True)
class SweepConfig:
    input_size: int = 299
    shapes: str = "xception"  # or a CSV/YAML file of h, w, c_in, c_out, k, stride, or a Keras model file
    variants: tuple[str, ...] = VARIANTS
    precisions: tuple[str, ...] = ("fp32", "int8")
    runtimes: tuple[str, ...] = ("litert",)
    device: str = "cpu"
    threads: int | None = 1
    bench: BenchConfig = SWEEP_BENCH
    segments: tuple[str, ...] = ()  # the spectrum: G per separable shape ("1", "C/4", "C"), besides the variants

    def __post_init__(self):
        object.__setattr__(self, "segments", tuple(dict.fromkeys(segments_variant(v) for v in self.segments)))
        if not self.variants and not self.segments:
            raise EdgexError("the sweep needs --variants or --segments (none given)")
        for v in self.variants:
            if v not in VARIANTS:
                raise choice_error("variant", v, VARIANTS)
        for r in self.runtimes:
            if r not in RUNTIME_PRECISIONS:
                raise choice_error("runtime", r, RUNTIME_PRECISIONS)
        for p in self.precisions:
            if p not in ("fp32", "fp16", "int8"):
                raise choice_error("precision", p, ("fp32", "fp16", "int8"))
        for r in self.runtimes:
            if not any(p in RUNTIME_PRECISIONS[r] for p in self.precisions):
                raise EdgexError(
                    f"runtime {r} runs none of the precisions {','.join(self.precisions)}; it runs: "
                    f"{', '.join(RUNTIME_PRECISIONS[r])}"
                )
        if self.shapes == "xception" and self.input_size < 71:
            raise EdgexError(
                f"the sweep uses the paper Xception's shapes; --input-size must be >= 71, got {self.input_size}"
            )


# -- one-layer models ----------------------------------------------------------------------------------------------
def layer_model(spec: ConvSpec, variant: str):
    """A Keras model of one convolution in the given variant (biased: batch norm folds into a bias)."""
    from devices.tfkeras import keras

    k = keras()
    layers = k.layers
    if is_segments(variant):
        return segments_layer(spec, variant, k)
    if variant == "pointwise":  # sees the already-strided output of the depthwise half
        inputs = k.Input((spec.out_h, spec.out_w, spec.c_in))
        return k.Model(inputs, layers.Conv2D(spec.c_out, 1)(inputs))
    inputs = k.Input((spec.h, spec.w, spec.c_in))
    common = {"strides": spec.stride, "padding": spec.padding}
    layer = {
        "regular": lambda: layers.Conv2D(spec.c_out, spec.k, **common),
        "separable": lambda: layers.SeparableConv2D(spec.c_out, spec.k, **common),
        "depthwise": lambda: layers.DepthwiseConv2D(spec.k, **common),
    }[variant]()
    return k.Model(inputs, layer(inputs))


def export_layer(model, folder: Path, name: str, runtime: str, precision: str, samples: int = 4) -> Path:
    """Convert a one-layer model for a runtime and precision (cached by name), calibrated on ``samples`` random
    inputs."""
    from converters.registry import convert, format_for_runtime
    from converters.source import source_from_keras

    suffix = {"litert": ".tflite", "onnxruntime": ".onnx", "tensorflow": ".keras"}[runtime]
    path = folder / f"{name}_{precision}{suffix}"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    if runtime == "tensorflow":
        model.save(path)
        return path
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((samples, *shape)).astype(np.float32)
    source = source_from_keras(model, folder / f"{name}.keras")
    to = format_for_runtime(runtime)
    # int8 TFLite layers take and give int8, so that only the layer itself is timed, not (de)quantization.
    io = "int8" if (precision == "int8" and to == "tflite") else None
    convert(
        source,
        to,
        precision,
        out=path,
        force=True,
        calibration=inputs if precision == "int8" else None,
        parity_inputs=inputs[:1],
        io=io,
        signature=False,
    )
    if to == "onnx":
        drop_layout_transposes(path)
    return path


def layer_io_bytes(runtime: str, precision: str) -> int | None:
    """Bytes per element of a one-layer model's input and output when they differ from its precision's:
    ONNX Runtime's int8 (QDQ) models take and give float."""
    return 4 if (runtime == "onnxruntime" and precision == "int8") else None


# -- roofs ---------------------------------------------------------------------------------------------------------
def measure_roofs(
    runtimes, precisions, folder: Path, device: str, threads: int | None, config: BenchConfig = SWEEP_BENCH
) -> list[Roof]:
    from devices.tfkeras import keras

    k = keras()
    roofs = []
    for runtime in runtimes:
        for precision in precisions:
            if precision not in RUNTIME_PRECISIONS[runtime]:
                continue
            gemm = export_layer(layer_model(COMPUTE_PROBE, "regular"), folder, "roof_gemm", runtime, precision)
            p50 = benchmark(gemm, runtime=runtime, device=device, threads=threads, config=config).latency.p50
            compute = 2 * COMPUTE_PROBE.macs("regular") / (p50 / 1e3) / 1e9
            # An ADD of a constant: XNNPACK runs it in fp32 and int8 alike (its int8 RELU falls back to a slow
            # reference kernel, which would measure the kernel, not the memory).
            if runtime == "onnxruntime":  # one float Add (tf2onnx would write a Mul and an Add, QDQ would add more)
                probe, act_bytes = onnx_add_probe(folder / "roof_add.onnx"), 4
            else:
                inputs = k.Input(BANDWIDTH_PROBE[1:])
                add = k.Model(inputs, k.layers.Rescaling(1.0, offset=0.25)(inputs))
                probe = export_layer(add, folder, "roof_add", runtime, precision, samples=1)  # 16.8 M values each
                act_bytes = 1 if precision == "int8" else 4
            p50 = benchmark(probe, runtime=runtime, device=device, threads=threads, config=config).latency.p50
            moved = 2 * int(np.prod(BANDWIDTH_PROBE)) * act_bytes  # read once, written once
            roofs.append(Roof(runtime, precision, compute, moved / (p50 / 1e3) / 1e9))
    return roofs


def onnx_add_probe(path: Path) -> Path:
    """The bandwidth probe for ONNX Runtime, written directly: one float32 Add of a constant. Bandwidth in bytes
    per second does not depend on the element type, so it serves the int8 roof too."""
    if path.exists():
        return path
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = list(BANDWIDTH_PROBE)
    graph = helper.make_graph(
        [helper.make_node("Add", ["input", "offset"], ["output"])],
        "bandwidth_probe",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(np.array(0.25, np.float32), "offset")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


# -- the sweep -----------------------------------------------------------------------------------------------------
def sweep(
    config: SweepConfig = SweepConfig(),
    out_dir: str | Path = "runs/sweep",
    *,
    force: bool = False,
    progress: Progress | None = None,
    plots: bool = True,
) -> SweepResult:
    """Measure every shape x variant x runtime x precision; write sweep.json, bench.json/.csv, summary.md, PNGs.
    ``progress`` receives each measured layer's row as a ``Measured`` event."""
    out_dir = Path(out_dir)
    refuse_overwrite(out_dir / "sweep.json", force)
    start = time.perf_counter()
    shapes = resolve_shapes(config.shapes, config.input_size)
    models_dir = out_dir / "models"
    if force:  # one-layer exports are cached by name inside one run only
        shutil.rmtree(models_dir, ignore_errors=True)
    roofs = measure_roofs(config.runtimes, config.precisions, models_dir, config.device, config.threads, config.bench)
    roof_of = {(r.runtime, r.precision): r for r in roofs}
    rows, results = [], []
    jobs = sweep_jobs(config, shapes)
    for i, (spec, count, variant, runtime, precision) in enumerate(jobs, 1):
        row, result = measure_layer(
            config, models_dir, spec, variant, runtime, precision, roof_of[(runtime, precision)]
        )
        rows.append(replace(row, count=count))
        results.append(result)
        if progress is not None:
            progress(Measured(row=rows[-1], index=i, total=len(jobs)))
    speedups = speedup_table(rows)
    result = SweepResult(
        rows=tuple(rows),
        roofs=tuple(roofs),
        speedups=tuple(speedups),
        bench=tuple(results),
        out_dir=str(out_dir),
        seconds=time.perf_counter() - start,
    )
    return write_sweep(result, out_dir, plots=plots)


def sweep_jobs(config: SweepConfig, shapes) -> list[tuple]:
    """(spec, count, variant, runtime, precision) of every measurement: the variants on every shape, then the
    segments on the shapes the spectrum applies to."""
    pairs = [(spec, count, variant) for _, spec, count in shapes for variant in variants_for(spec, config.variants)]
    if config.segments:
        spectrum = spectrum_shapes(shapes, tuple(v.split(":", 1)[1] for v in config.segments))
        pairs += [(spec, count, variant) for _, spec, count in spectrum for variant in config.segments]
    return [
        (spec, count, variant, runtime, precision)
        for spec, count, variant in pairs
        for runtime in config.runtimes
        for precision in config.precisions
        if precision in RUNTIME_PRECISIONS[runtime]
    ]


def measure_layer(config: SweepConfig, models_dir: Path, spec: ConvSpec, variant, runtime, precision, roof: Roof):
    """Export, time and place one layer: its row and its bench result."""
    tag = variant.replace(":", "_").replace("/", "_")
    name = f"{spec.h}x{spec.w}x{spec.c_in}_{spec.c_out}_k{spec.k}s{spec.stride}{spec.padding[0]}_{tag}"
    path = export_layer(layer_model(spec, variant), models_dir, name, runtime, precision)
    result = benchmark(path, runtime=runtime, device=config.device, threads=config.threads, config=config.bench)
    p50 = result.latency.p50
    io_bytes = layer_io_bytes(runtime, precision)
    if is_segments(variant):
        groups, macs, params, bytes_moved = segments_costs(spec, variant, precision, io_bytes)
        placement = op_placement(path, runtime, precision).text
    else:
        macs, params = spec.macs(variant), spec.params(variant)
        bytes_moved, groups, placement = spec.bytes_moved(variant, precision, io_bytes), 0, ""
    intensity = 2 * macs / bytes_moved
    gops = 2 * macs / (p50 / 1e3) / 1e9
    row = SweepRow(
        shape=spec.label, variant=variant, runtime=runtime, precision=precision,
        h=spec.h, w=spec.w, c_in=spec.c_in, c_out=spec.c_out, k=spec.k, stride=spec.stride,
        macs=macs, params=params, bytes_moved=bytes_moved, intensity=intensity, p50_ms=p50, gops=gops,
        roof_fraction=gops / roof.attainable(intensity), valid=result.valid, groups=groups, placement=placement,
    )  # fmt: skip
    extra = {"shape": spec.label, "variant": variant, "precision": precision, "macs": macs, "gops": gops}
    extra.update(intensity=intensity, roof_fraction=row.roof_fraction, groups=groups, placement=placement)
    return row, result.with_extra(label=f"{spec.label} {variant} {precision}", **extra)


__all__ = [
    "Roof",
    "SweepConfig",
    "SweepResult",
    "SweepRow",
    "drop_layout_transposes",
    "export_layer",
    "layer_model",
    "load_shapes",
    "load_sweep",
    "model_shapes",
    "resolve_shapes",
    "speedup_table",
    "summary_markdown",
    "sweep",
    "variants_for",
    "write_sweep",
    "xception_shapes",
]
