"""Interleaved latency A/B: two or more loaded models timed in one process, one run of each in turn (A B, B A,
A B, ...), so that what drifts on a shared machine (clock speed, other processes, caches) drifts for all of them
alike, and neither always runs first.

The ratio of two models is the median over rounds of ``a_i / b_i`` (two runs a round apart), with the
distribution-free 95% confidence interval of that median (order statistics of the paired ratios, as
``LatencyStats.median_ci95``). B is faster only when the whole interval lies above 1 + ``NOISE``: two interpreters
of one and the same file, interleaved, differ by a few tenths of a percent (their memory lands elsewhere), which
thousands of rounds resolve; such a difference is real for those two instances, not a property of the model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from devices.bench import BenchConfig, BenchResult, bench_result, feeds_for, median_ci95, warm_up
from devices.errors import EdgexError

# Two LiteRT interpreters of the same 0.13 ms int8 model, interleaved 3,000-4,000 rounds: ratios 1.000-1.003 with
# intervals that exclude 1 (AVX-512 EPYC; 1.008 before the order alternated). A win must clear this margin.
NOISE = 0.02


@dataclass(frozen=True)
class LatencyRatio:
    """How many times longer A's runs take than B's, from one interleaved run."""

    a: BenchResult
    b: BenchResult
    ratio: float  # median over rounds of a_i / b_i: above 1, B is faster
    ci95: tuple[float, float]  # distribution-free 95% confidence interval of that median
    rounds: int

    @property
    def b_is_faster(self) -> bool:
        return self.ci95[0] > 1.0 + NOISE

    @property
    def a_is_faster(self) -> bool:
        return self.ci95[1] < 1.0 / (1.0 + NOISE)

    def describe(self, a: str = "A", b: str = "B") -> str:
        lo, hi = self.ci95
        figure = f"{a} / {b} latency {self.ratio:.3f} [{lo:.3f}, {hi:.3f}] (95% CI, {self.rounds} interleaved rounds)"
        if self.b_is_faster:
            return f"{figure}: {b} is {self.ratio:.2f}x faster"
        if self.a_is_faster:
            return f"{figure}: {a} is {1 / self.ratio:.2f}x faster"
        return f"{figure}: no difference beyond the noise ({NOISE:.0%})"

    @classmethod
    def from_results(cls, a: BenchResult, b: BenchResult) -> LatencyRatio:
        """The ratio a device sent back: its second row carries it (``interleaved``)."""
        data = b.extra["interleaved"]
        return cls(a=a, b=b, ratio=float(data["ratio"]), ci95=tuple(data["ci95"]), rounds=int(data["rounds"]))

    def to_dict(self) -> dict:
        return {
            "a": self.a.label or self.a.model,
            "b": self.b.label or self.b.model,
            "ratio": self.ratio,
            "ci95": list(self.ci95),
            "rounds": self.rounds,
            "b_is_faster": self.b_is_faster,
            "a_is_faster": self.a_is_faster,
        }


def paired_ratio(a_seconds: Sequence[float], b_seconds: Sequence[float]) -> tuple[float, tuple[float, float]]:
    """The median of a_i / b_i over paired runs and its 95% confidence interval (computed on the log ratios,
    whose order statistics are the ratios' own)."""
    a, b = np.asarray(a_seconds, np.float64), np.asarray(b_seconds, np.float64)
    if len(a) != len(b) or len(a) == 0:
        raise EdgexError(f"an A/B needs paired runs of both models (got {len(a)} and {len(b)})")
    logs = np.sort(np.log(a / b))
    lo, hi = median_ci95(logs)
    return float(math.exp(np.median(logs))), (math.exp(lo), math.exp(hi))


@dataclass(frozen=True)
class InterleavedRuns:
    """Models timed in turn: each one's BenchResult, and the seconds of its runs, round by round."""

    results: tuple[BenchResult, ...]
    seconds: tuple[tuple[float, ...], ...]  # seconds[m][r]: model m's run in round r

    def ratio(self, a: int, b: int) -> LatencyRatio:
        """Model ``a`` against model ``b`` (indices into ``results``)."""
        ratio, ci95 = paired_ratio(self.seconds[a], self.seconds[b])
        return LatencyRatio(a=self.results[a], b=self.results[b], ratio=ratio, ci95=ci95, rounds=len(self.seconds[a]))


def interleave(models: Sequence, config: BenchConfig = BenchConfig(), inputs=None) -> InterleavedRuns:
    """Time several loaded models in turn, one run each per round, until every model has at least
    ``config.runs`` runs and ``config.min_seconds`` of timed runs (or ``config.max_seconds`` in all)."""
    if len(models) < 2:
        raise EdgexError(f"interleaving needs at least two models, got {len(models)}")
    feeds = [feeds_for(model, config, inputs) for model in models]
    first_ms = [warm_up(model, feed, config) for model, feed in zip(models, feeds)]
    samples, timed = _rounds(models, feeds, config)
    results = tuple(
        bench_result(model, config, runs, timed, first_ms=first, real_inputs=inputs is not None)
        for model, runs, first in zip(models, samples, first_ms)
    )
    return InterleavedRuns(results, tuple(tuple(runs) for runs in samples))


def _rounds(models, feeds, config: BenchConfig) -> tuple[list[list[float]], float]:
    """Every model's timed runs, one per model per round; and how long all rounds took, per model."""
    clock = time.perf_counter
    samples: list[list[float]] = [[] for _ in models]
    calls = [(model.set_inputs, model.invoke, feed) for model, feed in zip(models, feeds)]
    begin = clock()
    deadline, enough = begin + config.max_seconds, config.min_seconds * len(models)
    order = list(zip(calls, samples))
    while True:
        rounds = len(samples[0])
        # Every other round runs the models in reverse (A B, B A, ...): the run that comes second in a round is
        # measurably faster or slower (0.8% on a 0.13 ms LiteRT model), and reversing cancels that in the pairs.
        for (set_inputs, invoke, feed), runs in order if rounds % 2 == 0 else order[::-1]:
            set_inputs(feed[rounds % len(feed)])
            t0 = clock()
            invoke()
            runs.append(clock() - t0)
        now = clock()
        if (rounds + 1 >= config.runs and now - begin >= enough) or now >= deadline:
            return samples, (now - begin) / len(models)


def latency_ratio(a, b, config: BenchConfig = BenchConfig(), inputs=None) -> LatencyRatio:
    """The interleaved A/B of two loaded models."""
    return interleave([a, b], config, inputs).ratio(0, 1)


def interleaved_files(
    paths: Sequence,
    *,
    runtime: str = "auto",
    device: str = "cpu",
    threads: int | Sequence[int | None] | None = None,
    options: Sequence[dict] | None = None,
    config: BenchConfig = BenchConfig(),
    inputs=None,
) -> InterleavedRuns:
    """Load model files in this process (each with its own runtime ``options`` and thread count, the same ones
    by default) and time them interleaved."""
    from contextlib import ExitStack

    from devices.registry import load_model

    counts = list(threads) if isinstance(threads, (list, tuple)) else [threads] * len(paths)
    extra = list(options or [{}] * len(paths))
    with ExitStack() as stack:
        models = [
            stack.enter_context(load_model(path, runtime=runtime, device=device, threads=count, **opts))
            for path, count, opts in zip(paths, counts, extra)
        ]
        return interleave(models, config, inputs)
