"""Where a model's time goes, by convolution kind, next to where its MACs go: ONNX Runtime's per-node profile, or for
TFLite one-layer sub-models timed by the sweep."""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

from devices.bench import BenchConfig, benchmark

KINDS = ("pointwise", "depthwise", "regular", "shortcut", "rest")
# Per layer: at least 20 runs and 30 ms, in rounds of one run of every layer of the model (60 s at most in all).
LAYER_BENCH = BenchConfig(warmup=3, min_warmup_seconds=0.01, runs=20, min_seconds=0.03, max_seconds=60.0)


def time_breakdown(cost, runtime, precision, artifact, total_ms, config, layers_dir) -> dict:
    """kind -> {"ms", "time_share", "mac_share"} for one model file in one runtime."""
    macs = cost.macs_by_kind()
    mac_total = sum(macs.values()) or 1
    if runtime == "onnxruntime":
        times = _onnx_profile(artifact, config)  # every node is profiled, the rest included
    else:
        times = _tflite_layer_times(cost, precision, config, layers_dir)
        # What the convolutions' sub-models do not account for (sub-models can also sum to more than the model).
        times["rest"] = max(0.0, total_ms - sum(times.values()))
    total = sum(times.values()) or 1
    mac_shares = {
        "pointwise": macs["pointwise"],
        "depthwise": macs["depthwise"],
        "regular": macs["regular"],
        "shortcut": macs["shortcut"],
        "rest": macs["dense"],
    }
    return {
        kind: {
            "ms": times.get(kind, 0.0),
            "time_share": times.get(kind, 0.0) / total,
            "mac_share": mac_shares.get(kind, 0) / mac_total,
        }
        for kind in KINDS
    }


def _tflite_layer_times(cost, precision, config, folder: Path) -> dict:
    """Sum of one-layer sub-model latencies per kind: each distinct shape exported once, and all of them timed in
    turn in one process, so that the shares they make are measured under the same conditions."""
    from edgex.sepconv.sweep import export_layer, layer_model

    uses = []  # (kind, (spec, variant)) for each convolution the model runs
    for layer in cost.layers:
        if layer.spec is None:
            continue
        parts = {"separable": ("depthwise", "pointwise")}.get(layer.kind, ())
        jobs = [(part, part) for part in parts] or [
            (layer.kind, "depthwise" if layer.kind == "depthwise" else "regular")
        ]
        uses += [(kind, (layer.spec, variant)) for kind, variant in jobs]
    paths = {}
    for spec, variant in dict.fromkeys(key for _, key in uses):
        name = f"{spec.h}x{spec.w}x{spec.c_in}_{spec.c_out}_k{spec.k}s{spec.stride}{spec.padding[0]}_{variant}"
        paths[spec, variant] = export_layer(layer_model(spec, variant), folder, name, "litert", precision)
    p50 = dict(zip(paths, _p50s(list(paths.values()), config)))
    times = defaultdict(float)
    for kind, key in uses:
        times[kind] += p50[key]
    return dict(times)


def _p50s(paths: list[Path], config) -> list[float]:
    """Median latency of each file on LiteRT, interleaved when there are several."""
    from devices.interleave import interleaved_files

    if len(paths) == 1:
        return [benchmark(paths[0], runtime="litert", device=config.device, threads=config.threads,
                          config=LAYER_BENCH).latency.p50]  # fmt: skip
    runs = interleaved_files(paths, runtime="litert", device=config.device, threads=config.threads, config=LAYER_BENCH)
    return [result.latency.p50 for result in runs.results]


def _onnx_profile(artifact: Path, config, runs: int = 20) -> dict:
    """Per-node kernel time from ONNX Runtime's profiler, summed by convolution kind. Node names in the profile
    are those of the optimized graph (fused, NCHWc), so that graph is saved and read for the attributes."""
    import onnx

    from devices.onnxruntime import OnnxRuntimeModel

    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        model = OnnxRuntimeModel(
            artifact,
            device=config.device,
            threads=config.threads,
            profile_prefix=str(Path(tmp) / "profile"),
            optimized_model_path=str(optimized),
        )
        model.set_inputs(model.sample_inputs(1))
        for _ in range(3 + runs):
            model.invoke()
        trace = json.loads(Path(model.end_profiling()).read_text())
        model.close()
        # Only the timed runs: the profile also holds the warm-up, the first run included (allocation, packing).
        starts = sorted(e["ts"] for e in trace if e.get("name") == "model_run")
        cutoff, timed = (starts[3], len(starts) - 3) if len(starts) > 3 else (float("-inf"), 3 + runs)
        graph = onnx.load(str(optimized), load_external_data=False).graph
    initializers = {t.name: list(t.dims) for t in graph.initializer}
    nodes = {n.name: n for n in graph.node}
    times = defaultdict(float)
    for event in trace:
        timed_node = event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time")
        if not timed_node or event.get("ts", 0) < cutoff:
            continue
        name = event["name"][: -len("_kernel_time")]
        kind = _onnx_kind(event.get("args", {}).get("op_name", ""), nodes.get(name), initializers)
        times[kind] += event.get("dur", 0) / 1e3 / timed
    return dict(times)


def _onnx_kind(op: str, node, initializers) -> str:
    if op not in ("Conv", "QLinearConv", "ConvInteger", "FusedConv") or node is None:
        return "rest"  # not a convolution, or one whose attributes the optimized graph does not show
    attributes = {a.name: a for a in node.attribute}
    group = attributes["group"].i if "group" in attributes else 1
    kernel = list(attributes["kernel_shape"].ints) if "kernel_shape" in attributes else None
    strides = list(attributes["strides"].ints) if "strides" in attributes else [1, 1]
    if kernel is None:  # not stated: read it from the weight's shape
        weight = node.input[3] if op == "QLinearConv" else node.input[1]
        dims = initializers.get(weight)
        kernel = dims[2:] if dims else None
    if group > 1:
        return "depthwise"
    if kernel is None:
        return "rest"
    if kernel == [1, 1]:
        return "shortcut" if max(strides) > 1 else "pointwise"
    return "regular"
