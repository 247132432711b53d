"""`edgex compare`: Xception against its regular-convolution twin (and any other models) on this device —
parameters, MACs, file size, latency and accuracy per format and precision, and where the time goes by
operation type (ONNX Runtime's per-node profile; for TFLite, one-layer sub-models timed by the sweep)."""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from devices.bench import BenchConfig, BenchResult, benchmark
from devices.errors import EdgexError, choice_error
from devices.files import refuse_overwrite
from devices.metadata import ArtifactMetadata, read_metadata, write_metadata
from edgex.artifacts.latency import invalid_note, write_study
from edgex.progress import Measured, Progress
from edgex.sepconv.breakdown import KINDS

RUNTIMES = ("litert", "onnxruntime")  # the runtimes compared; each runs the format converters.registry names
COMPARE_BENCH = BenchConfig(warmup=3, min_warmup_seconds=0.1, runs=20, min_seconds=0.5, max_seconds=30.0)


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
            if r not in RUNTIMES:
                raise choice_error("runtime", r, RUNTIMES)
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
class ABPair:
    """Xception against its regular-convolution twin on one runtime and precision."""

    runtime: str
    precision: str
    xception: str  # labels
    twin: str
    xception_ms: float  # p50
    twin_ms: float
    measured_speedup: float  # twin / Xception latency
    theoretical_speedup: float  # twin / Xception MACs
    params_ratio: float
    size_ratio: float
    valid: bool  # both timings passed the bench's stability checks

    @property
    def efficiency(self) -> float:
        """The share of the MAC ratio that the measured speedup reaches."""
        return self.measured_speedup / self.theoretical_speedup


# How to read the efficiency column (the report's and compare.md's).
EFFICIENCY_NOTE = (
    "efficiency: the measured speedup over the MAC ratio. Below 100%, the separable model loses part of its MAC "
    "saving (its depthwise convolutions do few MACs per byte moved); above 100%, the twin runs fewer MACs per second "
    "than Xception on that runtime and precision, so the separable model saves more time than its MACs predict."
)


@dataclass(frozen=True)
class CompareResult:
    rows: tuple[CompareRow, ...]
    breakdown: dict  # label -> runtime -> precision -> kind -> {"ms", "time_share", "mac_share"}
    ab: tuple[ABPair, ...]  # per runtime/precision: Xception vs twin speedup against the MAC ratio
    bench: tuple[BenchResult, ...]
    out_dir: str
    seconds: float
    files: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "rows": [asdict(r) for r in self.rows],
            "breakdown": self.breakdown,
            "ab": [asdict(a) for a in self.ab],
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
            meta = ArtifactMetadata(
                input_shape=(config.input_size, config.input_size, 3),
                class_names=tuple(str(i) for i in range(config.classes)),
                preprocessing=XCEPTION,
                model_config=config.to_dict(),
                preset=preset,
                weights="random",
            )
            write_metadata(path, meta)
        paths.append(path)
    return paths


def compare(
    config: CompareConfig = CompareConfig(),
    out_dir: str | Path = "runs/compare",
    *,
    force: bool = False,
    progress: Progress | None = None,
    plots: bool = True,
    artifacts: dict | None = None,
) -> CompareResult:
    """Convert every model for every runtime and precision, then time it and measure its accuracy; ``progress``
    receives each row as a ``Measured`` event.

    ``artifacts``: files converted already, ``{(model path, runtime, precision): file}``, used instead of
    converting again (the pipeline's convert and quantize stages made them); give both models of a pair made the
    same way, or neither, for a fair A/B."""
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
    given = {(Path(m).resolve(), runtime, precision): f for (m, runtime, precision), f in (artifacts or {}).items()}
    labels = _labels(paths)
    total = len(paths) * len(config.runtimes) * len(config.precisions)
    rows, results, breakdown = [], [], {}
    for path in paths:
        model = _Model.load(path, labels[path], config)
        for runtime in config.runtimes:
            for precision in config.precisions:
                artifact = _artifact(
                    model, runtime, precision, given.get((path.resolve(), runtime, precision)), models_dir, config
                )
                row, result = _measure(model, runtime, precision, artifact, config)
                rows.append(row)
                results.append(result)
                if config.breakdown and model.cost is not None and runtime in config.breakdown_runtimes:
                    from edgex.sepconv.breakdown import time_breakdown

                    shares = time_breakdown(
                        model.cost, runtime, precision, artifact, row.p50_ms, config, models_dir / "layers"
                    )
                    breakdown.setdefault(model.label, {}).setdefault(runtime, {})[precision] = shares
                if progress is not None:
                    progress(Measured(row=row, index=len(rows), total=total))
    result = CompareResult(
        rows=tuple(rows),
        breakdown=breakdown,
        ab=tuple(_ab(rows)),
        bench=tuple(results),
        out_dir=str(out_dir),
        seconds=time.perf_counter() - start,
    )
    return _write(result, out_dir, plots)


@dataclass(frozen=True)
class _Model:
    """One model of the comparison, loaded, with its costs and the data that measures its accuracy."""

    path: Path
    label: str
    source: object
    cost: object  # edgex.models.costs.ModelCost, or None for a model that is not Keras
    dataset: object  # None without --data
    trained: bool  # its classes are the dataset's: its accuracy means something

    @classmethod
    def load(cls, path: Path, label: str, config: CompareConfig) -> _Model:
        from converters import load_source
        from edgex.artifacts.accuracy import dataset_for
        from edgex.models.costs import model_cost

        source = load_source(path)
        meta = source.metadata
        cost = model_cost(source.keras_model) if source.keras_model is not None else None
        dataset = dataset_for(meta, config.data, int(source.input_shape[0])) if config.data else None
        trained = dataset is not None and meta.weights != "random" and meta.class_names == tuple(dataset.class_names)
        return cls(path=path, label=label, source=source, cost=cost, dataset=dataset, trained=trained)


def _artifact(model: _Model, runtime: str, precision: str, given: str | None, models_dir: Path, config) -> Path:
    """The file to time: the one given, or an export made (once) into ``models_dir``."""
    from converters.registry import format_for_runtime

    to = format_for_runtime(runtime)
    if given is not None and not Path(given).is_file():
        raise EdgexError(f"converted model not found: {given}")
    artifact = Path(given) if given is not None else models_dir / f"{model.label}_{precision}.{to}"
    if not artifact.exists():
        _export(model.source, to, precision, artifact, model.dataset, config)
    return artifact


def _measure(model: _Model, runtime: str, precision: str, artifact: Path, config) -> tuple[CompareRow, BenchResult]:
    from edgex.optimize.common import artifact_accuracy

    result = benchmark(artifact, runtime=runtime, device=config.device, threads=config.threads, config=config.bench)
    top1 = None
    if model.trained:
        top1 = artifact_accuracy(
            artifact, model.dataset, model.source.metadata.input_preprocessing, model.dataset.class_names
        )
    cost = model.cost
    row = CompareRow(
        model=str(model.path),
        label=model.label,
        runtime=runtime,
        precision=precision,
        artifact=str(artifact),
        params=cost.total_params if cost else 0,
        macs=cost.macs if cost else 0,
        size_bytes=result.model_size_bytes,
        p50_ms=result.latency.p50,
        p90_ms=result.latency.p90,
        images_per_s=result.images_per_s,
        top1=top1,
        valid=result.valid,
    )
    extra = {"top1": top1} if top1 is not None else {}
    labelled = result.with_extra(
        label=f"{model.label} {runtime} {precision}",
        precision=precision,
        model_label=model.label,
        macs=row.macs,
        **extra,
    )
    return row, labelled


def _labels(paths: list[Path]) -> dict[Path, str]:
    """A unique, readable name per model: preset + xception/regular_twin from the metadata, else the file stem;
    parent folder names are prepended while names collide (runs/a/model.keras vs runs/b/model.keras)."""

    def base(path: Path) -> str:
        meta = read_metadata(path)
        if meta.conv and meta.preset:
            return f"{meta.preset}_{'xception' if meta.conv == 'separable' else 'regular_twin'}"
        return path.stem

    names = {path: base(path) for path in paths}
    depth = 0
    while len(set(names.values())) < len(names) and depth < 4:
        depth += 1
        names = {path: "_".join([*path.parts[-1 - depth : -1], base(path)]) for path in paths}
    return names


def _export(source, to, precision, artifact, dataset, config) -> None:
    from edgex.artifacts.convert import export_model

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


def _ab(rows) -> list[ABPair]:
    """Xception vs its regular twin (rows whose labels end in _xception / _regular_twin, or the models'
    metadata conv), per runtime and precision: measured speedup next to the MAC ratio."""
    pairs = []
    by = defaultdict(dict)
    for r in rows:
        meta = read_metadata(r.model)
        if meta.conv:  # a model and its twin share a preset
            by[(r.runtime, r.precision, meta.preset)][meta.conv] = r
    for (runtime, precision, _), found in by.items():
        if "separable" in found and "regular" in found:
            sep, reg = found["separable"], found["regular"]
            pairs.append(
                ABPair(
                    runtime=runtime,
                    precision=precision,
                    xception=sep.label,
                    twin=reg.label,
                    xception_ms=sep.p50_ms,
                    twin_ms=reg.p50_ms,
                    measured_speedup=reg.p50_ms / sep.p50_ms,
                    theoretical_speedup=reg.macs / sep.macs if sep.macs else float("nan"),
                    params_ratio=reg.params / sep.params if sep.params else float("nan"),
                    size_ratio=reg.size_bytes / sep.size_bytes,
                    valid=sep.valid and reg.valid,
                )
            )
    return pairs


PLOT_FILES = {"latency_vs_macs": "model_latency_vs_macs.png", "breakdown": "time_breakdown.png"}


def _write(result: CompareResult, out_dir: Path, plots: bool) -> CompareResult:
    from dataclasses import replace

    files = {
        "compare": out_dir / "compare.json",
        "bench": out_dir / "bench.json",
        "csv": out_dir / "compare.csv",
        "summary": out_dir / "summary.md",
    }
    if plots:
        from edgex.plots import save

        for name, draw in compare_plots(result.rows, result.breakdown).items():
            files[name] = save(draw(), out_dir / PLOT_FILES[name])
    result = replace(result, files={k: str(v) for k, v in files.items()})
    write_study(files, result.bench, summary_markdown(result), "compare", result.to_dict())
    return result


def compare_plots(rows, breakdown: dict) -> dict[str, Callable]:
    """The comparison's plots, each drawn when called: name (a key of PLOT_FILES) -> a function returning the figure.

    ``breakdown`` is CompareResult's (label -> runtime -> precision -> kind -> shares)."""
    from edgex import plots

    drawn: dict[str, Callable] = {}
    points = [
        plots.Point(label=f"{r.runtime} {r.precision}", x=r.macs / 1e6, y=r.p50_ms, group=r.label)
        for r in rows
        if r.macs
    ]
    if points:
        drawn["latency_vs_macs"] = partial(
            plots.tradeoff,
            points,
            xlabel="multiply-accumulates per inference (millions)",
            ylabel="latency p50 (ms)",
            title="Whole models: latency against MACs, per runtime and precision",
            logx=True,
            logy=True,
            front=None,
        )
    shares = {
        f"{label} {runtime} {precision}": {k: (v["time_share"], v["mac_share"]) for k, v in kinds.items()}
        for label, runtimes in breakdown.items()
        for runtime, precisions in runtimes.items()
        for precision, kinds in precisions.items()
    }
    if shares:
        drawn["breakdown"] = partial(plots.time_breakdown, shares)
    return drawn


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
            f"| {a.runtime} | {a.precision} | {a.xception_ms:.3f} | {a.twin_ms:.3f} | "
            f"{a.measured_speedup:.2f}x{'' if a.valid else ' *'} | {a.theoretical_speedup:.2f}x | {a.efficiency:.0%} |"
            for a in result.ab
        ]
        lines += ["", EFFICIENCY_NOTE]
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
