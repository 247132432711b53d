"""`edgex compare`: Xception against its regular-convolution twin (and any other models) on this device —
parameters, MACs, file size, latency and accuracy per format and precision, and where the time goes by
operation type (ONNX Runtime's per-node profile; for TFLite, one-layer sub-models timed by the sweep)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from devices.bench import BenchConfig, BenchResult, benchmark
from devices.errors import EdgexError, choice_error
from devices.files import read_metadata, refuse_overwrite, write_metadata
from edgex.benchmarking import invalid_note, write_study

FORMATS = {"litert": "tflite", "onnxruntime": "onnx"}
COMPARE_BENCH = BenchConfig(warmup=3, min_warmup_seconds=0.1, runs=20, min_seconds=0.5, max_seconds=30.0)
KINDS = ("pointwise", "depthwise", "regular", "shortcut", "rest")


@dataclass(frozen=True)
class CompareConfig:
    preset: str | None = "mini"  # build Xception and its twin from this preset (random weights); None: only models
    models: tuple[str, ...] = ()  # extra model files (trained Xception/twin, InceptionV3...)
    precisions: tuple[str, ...] = ("fp32", "int8")
    runtimes: tuple[str, ...] = ("litert", "onnxruntime")
    device: str = "cpu"
    threads: int | None = None
    data: str | None = None  # calibration and accuracy
    calib_samples: int = 100
    breakdown: bool = True
    breakdown_runtimes: tuple[str, ...] = ("litert", "onnxruntime")  # TFLite's costs a one-layer model per shape
    bench: BenchConfig = COMPARE_BENCH

    def __post_init__(self):
        for r in self.runtimes:
            if r not in FORMATS:
                raise choice_error("runtime", r, FORMATS)
        for p in self.precisions:
            if p not in ("fp32", "int8"):
                raise choice_error("precision", p, ("fp32", "int8"))
        if self.preset is None and not self.models:
            raise EdgexError("nothing to compare: give --preset or --model")


@dataclass(frozen=True)
class CompareRow:
    model: str
    label: str
    runtime: str
    precision: str
    artifact: str
    params: int
    macs: int
    size_bytes: int
    p50_ms: float
    p90_ms: float
    images_per_s: float
    top1: float | None
    valid: bool


@dataclass(frozen=True)
class CompareResult:
    rows: tuple[CompareRow, ...]
    breakdown: dict  # label -> runtime -> precision -> kind -> {"ms", "time_share", "mac_share"}
    ab: tuple[dict, ...]  # per runtime/precision: Xception vs twin speedup against the MAC ratio
    bench: tuple[BenchResult, ...]
    out_dir: str
    seconds: float
    files: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "rows": [asdict(r) for r in self.rows],
            "breakdown": self.breakdown,
            "ab": list(self.ab),
            "seconds": self.seconds,
            "files": self.files,
        }


def _preset_models(preset: str, folder: Path, classes: int | None) -> list[Path]:
    """Xception and its regular twin for a preset, random weights, saved with metadata."""
    from devices.preprocess import XCEPTION
    from devices.tfkeras import keras
    from edgex.models import build_xception, preset_config

    paths = []
    for conv in ("separable", "regular"):
        config = preset_config(preset, conv=conv, classes=classes)
        path = folder / f"{preset}_{'xception' if conv == 'separable' else 'regular_twin'}.keras"
        if not path.exists():
            keras().utils.set_random_seed(0)
            build_xception(config).save(path)
            write_metadata(
                path,
                {
                    "class_names": [str(i) for i in range(config.classes)],
                    "input_shape": [config.input_size] * 2 + [3],
                    "preprocessing": XCEPTION.to_dict(),
                    "model_config": config.to_dict(),
                    "preset": preset,
                    "weights": "random",
                },
            )
        paths.append(path)
    return paths


def compare(
    config: CompareConfig = CompareConfig(),
    out_dir: str | Path = "runs/compare",
    *,
    force: bool = False,
    progress=None,
    plots: bool = True,
    artifacts: dict | None = None,
) -> CompareResult:
    """Convert every model for every runtime and precision, then time it and measure its accuracy.

    ``artifacts``: files converted already, ``{(model path, runtime, precision): file}``, used instead of
    converting again (the pipeline's convert and quantize stages made them); give both models of a pair made the
    same way, or neither, for a fair A/B."""
    from converters import load_source
    from edgex.artifacts import class_names_of, preprocessing_of
    from edgex.evaluation import dataset_for
    from edgex.export import export_model
    from edgex.models.costs import model_cost
    from edgex.quantize import artifact_accuracy

    out_dir = Path(out_dir)
    refuse_overwrite(out_dir / "compare.json", force)
    for model in config.models:
        if not Path(model).exists():
            raise EdgexError(f"model file not found: {model}")
    start = time.perf_counter()
    models_dir = out_dir / "models"
    if force:  # exports are cached by name inside one run only; a new run starts clean
        shutil.rmtree(models_dir, ignore_errors=True)
    models_dir.mkdir(parents=True, exist_ok=True)
    paths = _preset_models(config.preset, models_dir, None) if config.preset else []
    paths += [Path(m) for m in config.models]

    rows, results, breakdown = [], [], {}
    given_files = {
        (Path(model).resolve(), runtime, precision): file
        for (model, runtime, precision), file in (artifacts or {}).items()
    }
    labels = _labels(paths)
    for path in paths:
        source = load_source(path)
        meta = source.metadata
        label = labels[path]
        cost = model_cost(source.keras_model) if source.keras_model is not None else None
        size = int(source.input_shape[0])
        dataset = dataset_for(meta, config.data, size) if config.data else None
        trained = (
            dataset is not None
            and meta.get("weights") != "random"
            and tuple(class_names_of(meta, 0) if meta.get("class_names") else ()) == tuple(dataset.class_names)
        )
        for runtime in config.runtimes:
            for precision in config.precisions:
                to = FORMATS[runtime]
                given = given_files.get((path.resolve(), runtime, precision))
                if given is not None and not Path(given).is_file():
                    raise EdgexError(f"converted model not found: {given}")
                artifact = Path(given) if given is not None else models_dir / f"{label}_{precision}.{to}"
                if not artifact.exists():
                    _export(export_model, source, to, precision, artifact, dataset, config)
                result = benchmark(
                    artifact, runtime=runtime, device=config.device, threads=config.threads, config=config.bench
                )
                top1 = (
                    artifact_accuracy(artifact, dataset, preprocessing_of(meta), dataset.class_names)
                    if trained
                    else None
                )
                rows.append(
                    CompareRow(
                        str(path),
                        label,
                        runtime,
                        precision,
                        str(artifact),
                        cost.total_params if cost else 0,
                        cost.macs if cost else 0,
                        result.model_size_bytes,
                        result.latency.p50,
                        result.latency.p90,
                        result.images_per_s,
                        top1,
                        result.valid,
                    )
                )
                results.append(
                    result.with_extra(
                        label=f"{label} {runtime} {precision}",
                        precision=precision,
                        model_label=label,
                        macs=cost.macs if cost else 0,
                        **({"top1": top1} if top1 is not None else {}),
                    )
                )
                if config.breakdown and cost is not None and runtime in config.breakdown_runtimes:
                    shares = _breakdown(
                        source, cost, runtime, precision, artifact, result.latency.p50, config, models_dir / "layers"
                    )
                    breakdown.setdefault(label, {}).setdefault(runtime, {})[precision] = shares
                if progress is not None:
                    progress(rows[-1])
    result = CompareResult(
        tuple(rows), breakdown, tuple(_ab(rows)), tuple(results), str(out_dir), time.perf_counter() - start
    )
    return _write(result, out_dir, plots)


def _labels(paths: list[Path]) -> dict[Path, str]:
    """A unique, readable name per model: preset + xception/regular_twin from the metadata, else the file stem;
    parent folder names are prepended while names collide (runs/a/model.keras vs runs/b/model.keras)."""

    def base(path: Path) -> str:
        meta = read_metadata(path)
        config = meta.get("model_config") or {}
        if config.get("conv") and meta.get("preset"):
            return f"{meta['preset']}_{'xception' if config['conv'] == 'separable' else 'regular_twin'}"
        return path.stem

    names = {path: base(path) for path in paths}
    depth = 0
    while len(set(names.values())) < len(names) and depth < 4:
        depth += 1
        names = {path: "_".join([*path.parts[-1 - depth : -1], base(path)]) for path in paths}
    return names


def _export(export_model, source, to, precision, artifact, dataset, config) -> None:
    if precision == "int8" and dataset is None:
        # Latency does not depend on the calibration data: random samples stand in without --data.
        from converters import convert

        rng = np.random.default_rng(0)
        samples = rng.uniform(-1, 1, (min(config.calib_samples, 16), *source.input_shape)).astype(np.float32)
        convert(source, to, precision, out=artifact, force=True, calibration=samples, parity_inputs=samples[:4])
        return
    export_model(
        source.path,
        to,
        precision,
        data=dataset.name if dataset else None,
        out=artifact,
        force=True,
        calib_samples=config.calib_samples,
        parity_samples=32,
        source=source,
        dataset=dataset,
    )


def _ab(rows) -> list[dict]:
    """Xception vs its regular twin (rows whose labels end in _xception / _regular_twin, or the models'
    metadata conv), per runtime and precision: measured speedup next to the MAC ratio."""
    pairs = []
    by = defaultdict(dict)
    for r in rows:
        meta = read_metadata(r.model)
        conv = (meta.get("model_config") or {}).get("conv")
        if conv:  # a model and its twin share a preset
            by[(r.runtime, r.precision, meta.get("preset"))][conv] = r
    for (runtime, precision, _), found in by.items():
        if "separable" in found and "regular" in found:
            sep, reg = found["separable"], found["regular"]
            pairs.append(
                {
                    "runtime": runtime,
                    "precision": precision,
                    "xception": sep.label,
                    "twin": reg.label,
                    "xception_ms": sep.p50_ms,
                    "twin_ms": reg.p50_ms,
                    "measured_speedup": reg.p50_ms / sep.p50_ms,
                    "theoretical_speedup": reg.macs / sep.macs if sep.macs else float("nan"),
                    "params_ratio": reg.params / sep.params if sep.params else float("nan"),
                    "size_ratio": reg.size_bytes / sep.size_bytes,
                    "valid": sep.valid and reg.valid,
                }
            )
    return pairs


# -- where the time goes --------------------------------------------------------------------------------------------
def _breakdown(source, cost, runtime, precision, artifact, total_ms, config, layers_dir) -> dict:
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
    """Sum of one-layer sub-model latencies per kind (each distinct shape timed once)."""
    from edgex.sweep import SWEEP_BENCH, export_layer, layer_model

    cache: dict = {}
    times = defaultdict(float)
    for layer in cost.layers:
        if layer.spec is None:
            continue
        parts = {"separable": ("depthwise", "pointwise")}.get(layer.kind, ())
        jobs = [(part, part) for part in parts] or [
            (layer.kind, "depthwise" if layer.kind == "depthwise" else "regular")
        ]
        for kind, variant in jobs:
            key = (layer.spec, variant)
            if key not in cache:
                spec = layer.spec
                name = f"{spec.h}x{spec.w}x{spec.c_in}_{spec.c_out}_k{spec.k}s{spec.stride}{spec.padding[0]}_{variant}"
                path = export_layer(layer_model(spec, variant), folder, name, "litert", precision)
                cache[key] = benchmark(
                    path, runtime="litert", device=config.device, threads=config.threads, config=SWEEP_BENCH
                ).latency.p50
            times[kind] += cache[key]
    return dict(times)


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


def _write(result: CompareResult, out_dir: Path, plots: bool) -> CompareResult:
    from dataclasses import replace

    files = {
        "compare": out_dir / "compare.json",
        "bench": out_dir / "bench.json",
        "csv": out_dir / "compare.csv",
        "summary": out_dir / "summary.md",
    }
    if plots:
        from edgex import plots as plotting

        points = [
            {"label": f"{r.label} {r.runtime} {r.precision}", "macs": r.macs / 1e6, "ms": r.p50_ms}
            for r in result.rows
            if r.macs
        ]
        if points:
            files["latency_vs_macs"] = plotting.scatter(
                points,
                "macs",
                "ms",
                out_dir / "model_latency_vs_macs.png",
                xlabel="MACs per inference (millions)",
                ylabel="latency p50 (ms)",
                title="Models: latency against MACs",
                logx=True,
            )
        flat = {
            f"{label} {runtime} {precision}": {k: (v["time_share"], v["mac_share"]) for k, v in kinds.items()}
            for label, runtimes in result.breakdown.items()
            for runtime, precisions in runtimes.items()
            for precision, kinds in precisions.items()
        }
        if flat:
            files["breakdown"] = plotting.time_breakdown(flat, out_dir / "time_breakdown.png")
    result = replace(result, files={k: str(v) for k, v in files.items()})
    write_study(files, result.bench, summary_markdown(result), "compare", result.to_dict())
    return result


def summary_markdown(result: CompareResult) -> str:
    flagged = sum(not r.valid for r in result.rows)
    lines = [
        "# Model-level comparison",
        "",
        "| model | runtime | precision | params | MACs | size | p50 ms | img/s | top-1 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result.rows:
        top1 = f"{100 * r.top1:.2f}%" if r.top1 is not None else "-"
        lines.append(
            f"| {r.label} | {r.runtime} | {r.precision} | {r.params / 1e6:.2f} M | {r.macs / 1e6:.1f} M | "
            f"{r.size_bytes / 2**20:.2f} MiB | {r.p50_ms:.3f}{'' if r.valid else ' *'} | "
            f"{r.images_per_s:.1f} | {top1} |"
        )
    if result.ab:
        lines += [
            "",
            "## Xception vs its regular-convolution twin",
            "",
            "| runtime | precision | Xception ms | twin ms | measured speedup | MAC ratio | efficiency |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {a['runtime']} | {a['precision']} | {a['xception_ms']:.3f} | {a['twin_ms']:.3f} | "
            f"{a['measured_speedup']:.2f}x{'' if a.get('valid', True) else ' *'} | "
            f"{a['theoretical_speedup']:.2f}x | {a['measured_speedup'] / a['theoretical_speedup']:.0%} |"
            for a in result.ab
        ]
    if result.breakdown:
        lines += [
            "",
            "## Where the time goes (time share / MAC share)",
            "",
            "| model | runtime | precision | " + " | ".join(KINDS) + " |",
            "|---|---|---|" + "---:|" * len(KINDS),
        ]
        for label, runtimes in result.breakdown.items():
            for runtime, precisions in runtimes.items():
                for precision, kinds in precisions.items():
                    cells = " | ".join(
                        f"{100 * kinds[k]['time_share']:.0f}% / {100 * kinds[k]['mac_share']:.0f}%" for k in KINDS
                    )
                    lines.append(f"| {label} | {runtime} | {precision} | {cells} |")
    note = invalid_note(flagged, len(result.rows))
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"
