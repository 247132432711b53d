"""Issue 15: `edgex study`, seeds with intervals, latency, the paper's orderings checked (never asserted)."""

from __future__ import annotations

import json

import pytest

from devices.errors import EdgexError
from edgex.study import StudyConfig
from edgex.study.stats import t_interval, verdict, welch_p
from tests.conftest import RESIDUAL_STUDY


def test_t_interval_and_welch_by_hand():
    mean, low, high = t_interval([0.8, 0.9, 1.0])
    assert mean == pytest.approx(0.9) and mean - low == pytest.approx(high - mean)
    assert high - mean == pytest.approx(4.302653 * 0.1 / 3**0.5, rel=1e-5)  # t(0.975, 2) * s / sqrt(n)
    assert t_interval([0.5]) == (0.5, None, None)
    assert welch_p([0.9, 0.91, 0.92], [0.5, 0.51, 0.52]) < 0.001
    assert welch_p([0.9, 0.5, 0.7], [0.6, 0.8, 0.7]) > 0.5
    assert welch_p([0.9], [0.5]) is None
    assert [verdict(0.1, 0.01, True), verdict(-0.1, 0.01, True), verdict(0.1, 0.3, True)] == [
        "holds",
        "reversed",
        "unresolved",
    ]
    assert verdict(0.1, None, True) == "untested" and verdict(-0.1, 0.01, False) == "lower"


def test_study_variants_and_claims():
    spectrum = StudyConfig(study="spectrum", segments=("1", "C/2", "C"))
    assert [v.name for v in spectrum.variants()] == ["segments:1", "segments:C/2", "segments:C"]
    assert all(not c.claimed for c in spectrum.claims())  # the paper leaves the spectrum's middle open
    activation = StudyConfig(study="activation")
    assert [(c.better, c.worse) for c in activation.claims()] == [("none", "elu"), ("elu", "relu"), ("none", "relu")]
    inception = StudyConfig(study="inception")
    assert inception.preset_name == "paper" and inception.variants()[1].architecture == "inception_v3"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("study", "bogus"), "unknown study 'bogus'; choose one of: spectrum, activation, residual, inception"),
        (("study", "activation", "--seeds", "0"), "seeds must be a positive integer, got 0"),
        (("study", "spectrum", "--segments", "1,3"), "allowed: 1, 2, 4, 8, C/8, C/4, C/2, C"),
        (("study", "residual", "--runtime", "tvm"), "unknown runtime 'tvm'"),
    ],
)
def test_bad_study_input_is_one_line_and_exit_2(cli, tmp_path, args, fragment):
    result = cli(*args, "--out", tmp_path / "study")
    assert result.exit_code == 2
    assert fragment in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "study").exists()


@pytest.mark.slow
def test_tiny_study_writes_a_complete_study_json_and_resumes(residual_study, cli, monkeypatch):
    out, result = residual_study  # each study its own default folder (runs/study/NAME): the README's run one by one
    assert out.parent.parent.name == "runs" and out.name == "residual"
    assert result.exit_code == 0, result.output
    data = json.loads((out / "study.json").read_text())
    assert data["study"] == "residual" and data["config"]["seeds"] == 2
    assert [v["name"] for v in data["variants"]] == ["residual", "no-residual"]
    for variant in data["variants"]:
        low, high = variant["top1_ci95"]
        assert len(variant["runs"]) == 2 and all(len(run["curve"]) == 1 for run in variant["runs"])
        assert low <= variant["top1_mean"] <= high
        assert variant["params"] > 0 and variant["macs"] > 0
        (latency,) = variant["latency"]
        assert latency["runtime"] == "litert" and latency["p50_ms"] > 0
    with_residual, without = data["variants"]
    assert with_residual["params"] > without["params"]  # the 1x1 shortcuts and their batch norms
    (claim,) = data["comparisons"]
    assert claim["verdict"] in ("holds", "reversed", "unresolved") and 0 <= claim["p"] <= 1
    assert "Figure 9" in claim["sentence"]
    csv_lines = (out / "study.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and "p50_ms_litert_fp32" in csv_lines[0]
    summary = (out / "summary.md").read_text()
    assert "95% interval" in summary and "Claim residual > no-residual" in summary
    for name in ("accuracy.png", "latency.png", "curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.chdir(out.parent.parent.parent)
    again = cli(*RESIDUAL_STUDY)  # every (variant, seed) is saved: nothing is trained again
    assert again.exit_code == 0 and again.stdout.count("(saved)") == 4
    assert json.loads((out / "study.json").read_text())["variants"][0]["top1"] == with_residual["top1"]
    changed = cli("study", "residual", "--epochs", "2", "--out", out)
    assert changed.exit_code == 2 and "epochs: 1 -> 2" in changed.stderr


def test_zero_seeds_is_an_error_in_the_api_too():
    with pytest.raises(EdgexError, match="seeds"):
        StudyConfig(study="residual", seeds=0)


def test_a_study_passes_on_each_note_of_its_trainings_once():
    """Issue 28: a study's trainings say which kernel grouped convolutions train on; the study says it once, not for
    every variant and seed, and passes none of their epoch events on."""
    from edgex.progress import EpochEnd, Note, notes_once

    seen = []
    trainings = notes_once(seen.append)
    for event in (Note("a"), EpochEnd(epoch=1, epochs=1, metrics={}, seconds=0.0), Note("a"), Note("b"), Note("a")):
        trainings(event)
    assert seen == [Note("a"), Note("b")]
    assert notes_once(None) is None
