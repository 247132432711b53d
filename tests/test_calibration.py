"""TFLite int8 calibration shared between processes gives the model that one process gives, byte for byte."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

import converters.calibration as calibration
from converters.calibration import CalibrationSplit, plan_workers, split_calibration
from converters.registry import ExportOptions
from converters.source import load_source
from converters.tflite import make_converter
from devices.logs import quiet_native_logs


@pytest.fixture(scope="module")
def tiny_source(trained_tiny):
    return load_source(trained_tiny)


@pytest.fixture(scope="module")
def samples(digits):
    images, _ = digits.train.take(40, seed=0).arrays()
    return (images.astype(np.float32) / 127.5 - 1.0).astype(np.float32)


def _int8(source, samples) -> bytes:
    converter = make_converter(source, ExportOptions(precision="int8", calibration=samples))
    with quiet_native_logs():
        return converter.convert()


@pytest.fixture(scope="module")
def in_one_process(tiny_source, samples) -> bytes:
    return _int8(tiny_source, samples)


def test_workers_are_planned_only_where_they_pay():
    assert plan_workers(98, 0.38, processes=2) == (1, 42)  # the paper model: 56 samples here, 42 in a worker
    assert plan_workers(98, 0.38, processes=4) == (3, 21)
    assert plan_workers(98, 0.005, processes=4) == (0, 0)  # a small model: a worker's start costs more
    assert plan_workers(98, 0.38, processes=1) == (0, 0)
    assert plan_workers(1, 60.0, processes=2) == (0, 0)


@pytest.mark.slow
def test_split_calibration_gives_the_model_of_one_process(tiny_source, samples, in_one_process, monkeypatch):
    monkeypatch.setattr(calibration, "WORKER_START_S", 0.0)  # split however small the model
    with split_calibration(processes=2) as splits:
        shared = _int8(tiny_source, samples)
    assert splits == [CalibrationSplit(here=21, workers=(19,))]
    assert shared == in_one_process


FAILURES = {
    "exits": ([sys.executable, "-c", "raise SystemExit('no')"], "a calibration worker failed (no)", (19,)),
    "cannot start": (["/nonexistent/python"], "calibration workers could not start", ()),
}


@pytest.mark.slow
@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failed_worker_has_its_samples_calibrated_here(tiny_source, samples, in_one_process, monkeypatch, failure):
    command, why, workers = FAILURES[failure]
    monkeypatch.setattr(calibration, "WORKER_START_S", 0.0)
    monkeypatch.setattr(calibration, "worker_command", lambda *_: command)
    with pytest.warns(RuntimeWarning, match=re.escape(why)), split_calibration(processes=2) as splits:
        shared = _int8(tiny_source, samples)
    assert splits[0].here == 40 - sum(workers) and splits[0].workers == workers
    assert len(splits[0].failed) == 1 and splits[0].failed[0].startswith(why)
    assert shared == in_one_process


def test_small_models_calibrate_in_this_process(tiny_source, samples, in_one_process):
    with split_calibration(processes=4) as splits:
        assert _int8(tiny_source, samples) == in_one_process
    assert splits == [CalibrationSplit(here=40)]
