"""Latency measurement in the manner of TFLite's benchmark_model and MLPerf LoadGen: warm up, then time
at least ``runs`` invocations and at least ``min_seconds``, and say when a result is not trustworthy."""

from __future__ import annotations

import csv
import io
import math
import os
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from devices import sysinfo
from devices.errors import EdgexError
from devices.files import file_size

SCHEMA = "edgex.bench/1"
MAX_CV = 0.10  # a run whose coefficient of variation is above this is flagged as not valid


@dataclass(frozen=True)
class BenchConfig:
    warmup: int = 5  # warm-up invocations, not timed
    min_warmup_seconds: float = 0.2  # and at least this long warming up
    runs: int = 50  # at least this many timed invocations
    min_seconds: float = 1.0  # and at least this long
    max_seconds: float = 60.0  # stop here even if the two minimums are not met (the result is then not valid)
    batch: int = 1

    def __post_init__(self):
        if self.warmup < 0 or self.runs < 1 or self.batch < 1:
            raise EdgexError(
                f"warmup must be >= 0, runs >= 1 and batch >= 1 (got {self.warmup}, {self.runs}, {self.batch})"
            )
        if self.min_seconds < 0 or self.max_seconds <= 0 or self.min_warmup_seconds < 0:
            raise EdgexError("time limits must be positive")


@dataclass(frozen=True)
class LatencyStats:
    """Latency of the timed invocations, in milliseconds."""

    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    median_ci95: tuple[float, float]  # distribution-free 95% confidence interval of the median
    cv: float  # std / mean

    @classmethod
    def from_seconds(cls, samples: Sequence[float]) -> LatencyStats:
        ms = np.sort(np.asarray(samples, dtype=np.float64) * 1e3)
        n = len(ms)
        if n == 0:
            raise EdgexError("no timed runs to summarise")
        mean = float(ms.mean())
        std = float(ms.std(ddof=1)) if n > 1 else 0.0
        return cls(
            n=n,
            p50=float(np.percentile(ms, 50)),
            p90=float(np.percentile(ms, 90)),
            p99=float(np.percentile(ms, 99)),
            mean=mean,
            std=std,
            min=float(ms[0]),
            max=float(ms[-1]),
            median_ci95=median_ci95(ms),
            cv=std / mean if mean > 0 else 0.0,
        )


def median_ci95(sorted_ms: np.ndarray) -> tuple[float, float]:
    """Order statistics bracketing the median with 95% confidence (normal approximation to the binomial)."""
    n = len(sorted_ms)
    half = 1.96 * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half) - 1)
    hi = min(n - 1, math.ceil(n / 2 + half))
    return float(sorted_ms[lo]), float(sorted_ms[hi])


@dataclass(frozen=True)
class BenchResult:
    """One model on one device: the row of the bench schema that compare, sweep, pipeline and deploy reuse."""

    model: str
    format: str
    runtime: str
    runtime_version: str
    device: str
    threads: int | None
    batch: int
    model_size_bytes: int
    load_ms: float
    first_ms: float
    latency: LatencyStats
    timed_seconds: float
    inferences_per_s: float
    images_per_s: float
    peak_rss_mb: float
    load_rss_mb: float
    inputs: str
    valid: bool
    invalid_reasons: tuple[str, ...] = ()
    label: str = ""  # what the row is (variant, precision...), set by the caller
    extra: dict = field(default_factory=dict)  # caller's own columns (precision, accuracy, MACs, host...)
    environment: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["latency"]["median_ci95"] = list(self.latency.median_ci95)
        data["invalid_reasons"] = list(self.invalid_reasons)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> BenchResult:
        data = dict(data)
        lat = dict(data.pop("latency"))
        lat["median_ci95"] = tuple(lat["median_ci95"])
        data["invalid_reasons"] = tuple(data.get("invalid_reasons", ()))
        known = {f.name for f in fields(cls)}
        return cls(latency=LatencyStats(**lat), **{k: v for k, v in data.items() if k in known})

    def with_extra(self, label: str | None = None, **extra) -> BenchResult:
        return replace(self, label=self.label if label is None else label, extra={**self.extra, **extra})


def _rss_mb() -> float:
    """Current resident set size of this process in MiB."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return _peak_rss_mb()


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def measure(
    model,
    config: BenchConfig = BenchConfig(),
    inputs: Sequence[np.ndarray] | None = None,
    *,
    load_ms: float = 0.0,
    load_rss_mb: float = 0.0,
    progress=None,
) -> BenchResult:
    """Time a loaded model. ``inputs``: float (preprocessed) batches of ``config.batch`` samples to cycle
    through (real data, quantized here for integer models), or None for random inputs."""
    feeds = feeds_for(model, config, inputs)
    first_ms = warm_up(model, feeds, config)
    samples, timed = _timed_runs(model, feeds, config, progress)
    return bench_result(
        model,
        config,
        samples,
        timed,
        first_ms=first_ms,
        real_inputs=inputs is not None,
        load_ms=load_ms,
        load_rss_mb=load_rss_mb,
    )


def bench_result(
    model,
    config: BenchConfig,
    samples: Sequence[float],
    timed: float,
    *,
    first_ms: float,
    real_inputs: bool,
    load_ms: float = 0.0,
    load_rss_mb: float = 0.0,
) -> BenchResult:
    """The row of one loaded model from the seconds of its timed runs (``timed``: the seconds the loop took)."""
    stats = LatencyStats.from_seconds(samples)
    reasons = _invalid_reasons(stats, timed, config)
    per_s = 1e3 / stats.mean
    return BenchResult(
        model=str(model.path),
        format=_format_of(model.path),
        runtime=model.runtime,
        runtime_version=model.version,
        device=model.device,
        threads=getattr(model, "threads", None),
        batch=config.batch,
        model_size_bytes=file_size(model.path) if Path(model.path).exists() else 0,
        load_ms=load_ms,
        first_ms=first_ms,
        latency=stats,
        timed_seconds=timed,
        inferences_per_s=per_s,
        images_per_s=per_s * config.batch,
        peak_rss_mb=_peak_rss_mb(),
        load_rss_mb=load_rss_mb,
        inputs="data" if real_inputs else "random",
        valid=not reasons,
        invalid_reasons=tuple(reasons),
        environment=sysinfo.environment(),
    )


def feeds_for(model, config: BenchConfig, inputs) -> list[list[np.ndarray]]:
    """The model's input batches, encoded for it (its batch size set to the config's where it can change)."""
    if model.inputs[0].batch is None:
        model.resize_batch(config.batch)
    elif model.inputs[0].batch != config.batch:
        raise EdgexError(
            f"model input {model.inputs[0].name!r} has a fixed batch of {model.inputs[0].batch}; "
            f"cannot benchmark batch {config.batch} (convert with --batch dynamic)"
        )
    if inputs is not None:
        feeds = [[model.encode_input(batch)] for batch in inputs]
    else:
        feeds = [model.sample_inputs(config.batch)]
    if not feeds:
        raise EdgexError("no input batches to benchmark with")
    for feed in feeds[:1]:
        model.check_inputs(feed)
    return feeds


def warm_up(model, feeds, config: BenchConfig) -> float:
    """The first inference (returned, in ms), then the warm-up runs."""
    set_inputs, invoke, clock = model.set_inputs, model.invoke, time.perf_counter
    set_inputs(feeds[0])
    start = clock()
    invoke()
    first_ms = (clock() - start) * 1e3

    done, start = 0, clock()
    while done < config.warmup or clock() - start < config.min_warmup_seconds:
        if len(feeds) > 1:
            set_inputs(feeds[done % len(feeds)])
        invoke()
        done += 1
        if clock() - start > config.max_seconds:
            break
    return first_ms


def _timed_runs(model, feeds, config: BenchConfig, progress) -> tuple[list[float], float]:
    """The seconds of each timed inference, and the seconds the loop took in all."""
    set_inputs, invoke, clock = model.set_inputs, model.invoke, time.perf_counter
    samples: list[float] = []
    cycle = len(feeds) > 1
    set_inputs(feeds[0])
    begin = clock()
    deadline = begin + config.max_seconds
    while True:
        if cycle:
            set_inputs(feeds[len(samples) % len(feeds)])
        t0 = clock()
        invoke()
        t1 = clock()
        samples.append(t1 - t0)
        if (len(samples) >= config.runs and t1 - begin >= config.min_seconds) or t1 >= deadline:
            break
        if progress is not None and len(samples) % 16 == 0:
            progress(len(samples))
    return samples, clock() - begin


def _invalid_reasons(stats: LatencyStats, timed: float, config: BenchConfig) -> list[str]:
    reasons = []
    if stats.n < config.runs:
        reasons.append(f"only {stats.n} of {config.runs} runs before the {config.max_seconds:g} s limit")
    if timed < config.min_seconds:
        reasons.append(f"timed for {timed:.2f} s, less than the {config.min_seconds:g} s minimum")
    if stats.cv > MAX_CV:
        reasons.append(f"coefficient of variation {stats.cv:.1%} is above {MAX_CV:.0%}")
    return reasons


def _format_of(path) -> str:
    path = Path(path)
    return "saved_model" if path.is_dir() else path.suffix.lstrip(".")


def benchmark(
    path,
    *,
    runtime: str = "auto",
    device: str = "cpu",
    threads: int | None = None,
    config: BenchConfig = BenchConfig(),
    inputs=None,
    delegate_options: dict | None = None,
    progress=None,
) -> BenchResult:
    """Load a model file and time it: load time, first inference, then the timed runs."""
    from devices.registry import load_model

    rss_before = _rss_mb()
    start = time.perf_counter()
    model = load_model(path, runtime=runtime, device=device, threads=threads, delegate_options=delegate_options)
    load_ms = (time.perf_counter() - start) * 1e3
    try:
        return measure(model, config, inputs, load_ms=load_ms, load_rss_mb=_rss_mb() - rss_before, progress=progress)
    finally:
        model.close()


# -- one schema for every output --------------------------------------------------------------------------------
CSV_COLUMNS = (
    "label",
    "model",
    "format",
    "runtime",
    "runtime_version",
    "device",
    "threads",
    "batch",
    "model_size_bytes",
    "load_ms",
    "first_ms",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "std_ms",
    "min_ms",
    "max_ms",
    "median_ci95_lo_ms",
    "median_ci95_hi_ms",
    "cv",
    "runs",
    "timed_seconds",
    "inferences_per_s",
    "images_per_s",
    "peak_rss_mb",
    "load_rss_mb",
    "inputs",
    "valid",
    "invalid_reasons",
    "host",
    "cpu",
)


def to_row(result: BenchResult) -> dict:
    """A flat row for CSV (and for tables)."""
    lat = result.latency
    row = {
        "label": result.label,
        "model": result.model,
        "format": result.format,
        "runtime": result.runtime,
        "runtime_version": result.runtime_version,
        "device": result.device,
        "threads": result.threads,
        "batch": result.batch,
        "model_size_bytes": result.model_size_bytes,
        "load_ms": round(result.load_ms, 3),
        "first_ms": round(result.first_ms, 3),
        "p50_ms": lat.p50,
        "p90_ms": lat.p90,
        "p99_ms": lat.p99,
        "mean_ms": lat.mean,
        "std_ms": lat.std,
        "min_ms": lat.min,
        "max_ms": lat.max,
        "median_ci95_lo_ms": lat.median_ci95[0],
        "median_ci95_hi_ms": lat.median_ci95[1],
        "cv": lat.cv,
        "runs": lat.n,
        "timed_seconds": result.timed_seconds,
        "inferences_per_s": result.inferences_per_s,
        "images_per_s": result.images_per_s,
        "peak_rss_mb": result.peak_rss_mb,
        "load_rss_mb": result.load_rss_mb,
        "inputs": result.inputs,
        "valid": result.valid,
        "invalid_reasons": "; ".join(result.invalid_reasons),
        "host": result.environment.get("hostname", ""),
        "cpu": result.environment.get("cpu", ""),
    }
    row.update({k: v for k, v in result.extra.items() if not isinstance(v, (dict, list))})
    return row


def results_to_json(results: Sequence[BenchResult]) -> dict:
    return {"schema": SCHEMA, "results": [r.to_dict() for r in results]}


def results_from_json(data: dict) -> list[BenchResult]:
    if data.get("schema") != SCHEMA:
        raise EdgexError(f"not an edgex bench file (schema {data.get('schema')!r}, expected {SCHEMA!r})")
    return [BenchResult.from_dict(r) for r in data["results"]]


def results_to_csv(results: Sequence[BenchResult]) -> str:
    rows = [to_row(r) for r in results]
    extra = sorted({k for row in rows for k in row} - set(CSV_COLUMNS))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*CSV_COLUMNS, *extra], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
