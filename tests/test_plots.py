"""Issue 27: plots a person can read at a glance: labels that never overlap, the Pareto front drawn, plain ticks."""

from __future__ import annotations

import random

import pytest

from edgex import plots
from edgex.plots import Point, pareto_front
from tests.conftest import assert_readable, overlapping_texts, scientific_ticks


def test_the_pareto_front_is_every_point_nothing_beats_on_both_axes():
    points = [
        Point("fast, weak", 0.1, 90.0),
        Point("fast, weaker", 0.1, 85.0),  # same speed, less accurate: beaten
        Point("middle", 0.2, 95.0),
        Point("middle's twin", 0.2, 95.0),  # equal on both axes: neither beats the other
        Point("slow, no better", 0.3, 95.0),  # slower, not more accurate: beaten
        Point("slow, best", 0.4, 97.0),
        Point("slower, worse", 0.5, 96.0),
        Point("pruned", 0.05, 99.0, status="pruned"),  # stopped early: takes no part
        Point("failed", 0.01, 100.0, status="failed"),
    ]
    brute = [
        p for p in points[:7] if not any(q.x <= p.x and q.y >= p.y and (q.x, q.y) != (p.x, p.y) for q in points[:7])
    ]
    front = pareto_front(points)
    assert [p.label for p in front] == ["fast, weak", "middle", "middle's twin", "slow, best"]
    assert sorted(front, key=lambda p: p.label) == sorted(brute, key=lambda p: p.label)
    assert pareto_front([]) == [] and pareto_front([points[-1]]) == []


def _candidates(count: int, seed: int) -> list[Point]:
    """Candidates as a tune would give them: rows of equal accuracy, latencies in tight clusters, a few pruned and
    failed."""
    rng = random.Random(seed)
    candidates = []
    for i in range(count):
        status = "failed" if i % 10 == 9 else "pruned" if i % 10 == 8 else "done"
        cluster = rng.choice([0.2, 0.3, 1.5])
        candidates.append(
            Point(
                f"cand {i} {rng.choice(['int8', 'fp16', 'dynamic'])} t{rng.randint(1, 4)}",
                cluster * (1 + rng.uniform(-0.05, 0.05)),
                98 - rng.choice([0, 0.28, 0.56, 1.1]),
                group=rng.choice(["litert", "onnxruntime"]),
                status=status,
            )
        )
    return candidates


@pytest.mark.parametrize("count, seed", [(10, 0), (30, 1)])
def test_a_tune_sized_tradeoff_labels_every_point_without_overlap(count, seed):
    candidates = _candidates(count, seed)
    fig = plots.tradeoff(candidates, xlabel="latency p50 (ms)", ylabel="top-1 (%)", title="candidates", logx=True)
    ax = fig.axes[0]
    done = [p for p in candidates if p.status == "done"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    shown = {a.get_text() for a in ax.texts} | {entry.split("  ", 1)[1] for entry in legend if "  " in entry}
    numbers = {a.get_text() for a in ax.texts if a.get_text().isdigit()}
    assert {p.label for p in done} <= shown  # named beside its point, or numbered and keyed in the legend
    assert numbers == {str(n) for n in range(1, len(numbers) + 1)}
    assert f"{sum(p.status == 'failed' for p in candidates)} failed, not shown" in legend
    assert not any(p.label in shown for p in candidates if p.status != "done")
    front = pareto_front(candidates)
    staircase = ax.lines[0].get_xydata()
    assert [tuple(v) for v in staircase[::2]] == [(p.x, p.y) for p in front]
    assert_readable(fig)


def test_plain_ticks_on_log_axes_of_any_span():
    import matplotlib.pyplot as plt

    for low, high, expected in ((0.19, 0.36, {"0.2", "0.25", "0.3", "0.35"}), (0.09, 9.0, {"0.1", "0.2", "0.5", "1"})):
        fig, ax = plots.figure(5, 3)
        ax.plot([low, high], [1e-6, 3e7])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(low, high)
        plots.plain_ticks(ax.xaxis, ax.yaxis)
        fig.canvas.draw()
        labels = {t.get_text() for t in ax.get_xticklabels() if low <= t.get_position()[0] <= high}
        assert expected <= labels, labels
        assert not scientific_ticks(fig) and not overlapping_texts(fig)
        plt.close(fig)
    fig, ax = plots.figure(5, 3)
    ax.set_xscale("log")
    ax.set_xlim(0.2, 0.3)
    assert scientific_ticks(fig), "matplotlib's own log ticks are what plain_ticks replaces"
    plt.close(fig)


def test_the_study_plots_read_with_the_spectrums_eight_variants():
    from edgex.study import StudyConfig
    from edgex.study.report import study_plots
    from edgex.study.results import Latency, SeedRun, StudyResult, VariantResult

    config = StudyConfig("spectrum", segments=("1", "2", "4", "8", "C/8", "C/4", "C/2", "C"), seeds=2, epochs=3)
    variants = tuple(
        VariantResult(
            name=variant.name,
            architecture=variant.architecture,
            model={},
            params=1000 * (i + 1),
            macs=10**6 * (i + 1),
            runs=tuple(
                SeedRun(variant.name, seed, 0.9 + 0.01 * seed, (0.5, 0.8, 0.9 + 0.01 * seed), 1.0) for seed in (0, 1)
            ),
            latency=(Latency("litert", "fp32", 0.2 + 0.01 * i, True), Latency("litert", "int8", 0.1 + 0.005 * i, True)),
        )
        for i, variant in enumerate(config.variants())
    )
    result = StudyResult(config, variants, (), seconds=1.0, out_dir="")
    drawn = study_plots(result)
    assert set(drawn) == {"accuracy", "latency", "curves"}
    for draw in drawn.values():
        assert_readable(draw())
