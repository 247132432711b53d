"""TFLite's int8 calibration shared between processes.

TFLite's calibrator runs every sample through a logging interpreter on one thread, holding the GIL (0.4 s per
299-px image: 40 s of the paper model's 100 samples). What it records for each tensor is the min and the max over
the samples, so the samples can be split between processes and the records merged: the min of the mins and the
max of the maxes give the same calibrated model, byte for byte (tested). Within ``split_calibration()``, TFLite
converters (and their QuantizationDebugger) calibrate two samples here, time the second, and share the rest with
worker processes when that is faster than calibrating it all here.

Run as ``python -m converters.calibration FOLDER PART``, this module is the worker.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from devices.sysinfo import usable_cores

WORKER_START_S = 5.0  # a worker imports TensorFlow and reads the model (3.5-5 s measured on a 2-core EPYC)
MAX_PROCESSES = 4
PROBE_SAMPLES = 2  # calibrated here before deciding; the second one is timed (the first also allocates)


@dataclass(frozen=True)
class CalibrationSplit:
    """How one calibration was shared: samples calibrated in this process and in each worker."""

    here: int
    workers: tuple[int, ...] = ()
    failed: tuple[str, ...] = ()  # workers that did not finish (their samples were calibrated here instead)


@contextmanager
def split_calibration(processes: int | None = None) -> Iterator[list[CalibrationSplit]]:
    """Within the block, TFLite calibrations use up to ``processes`` processes (default: the usable cores, at most
    MAX_PROCESSES). Yields the list of CalibrationSplit that each calibration appends to."""
    from tensorflow.lite.python.optimize import calibrator

    calibrate_here = calibrator.Calibrator.calibrate
    processes = processes or min(usable_cores(), MAX_PROCESSES)
    splits: list[CalibrationSplit] = []

    def calibrate(self, dataset_gen):
        feed = _SharedFeed(dataset_gen, self._model_content, processes)
        try:
            calibrated = calibrate_here(self, feed)
            parts = feed.finish(lambda samples: calibrate_here(calibrator.Calibrator(self._model_content), samples))
        finally:
            feed.close()
        splits.append(feed.split)
        return merge_ranges(calibrated, parts)

    calibrator.Calibrator.calibrate = calibrate
    try:
        yield splits
    finally:
        calibrator.Calibrator.calibrate = calibrate_here


def merge_ranges(calibrated: bytes, others: list[bytes]) -> bytes:
    """``calibrated`` with each tensor's recorded min and max widened to those of the same model in ``others``."""
    if not others:
        return calibrated
    merged = bytearray(calibrated)
    ranges = _tensor_ranges(merged)
    for other in others:
        theirs = _tensor_ranges(other)
        if [name for name, _, _ in theirs] != [name for name, _, _ in ranges]:
            raise RuntimeError("the calibrated parts are not the same model")
        for (_, low, high), (_, their_low, their_high) in zip(ranges, theirs):
            np.minimum(low, their_low, out=low)
            np.maximum(high, their_high, out=high)
    return bytes(merged)


def _tensor_ranges(model: bytes | bytearray) -> list[tuple[bytes, np.ndarray, np.ndarray]]:
    """(name, min, max) of every tensor with calibration records; min and max are views into ``model``'s bytes
    (writable when it is a bytearray)."""
    from tensorflow.lite.python import schema_py_generated as schema

    root = schema.Model.GetRootAs(model, 0)
    ranges = []
    for g in range(root.SubgraphsLength()):
        graph = root.Subgraphs(g)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            quantization = tensor.Quantization()
            if quantization is not None and quantization.MinLength():
                ranges.append((tensor.Name(), quantization.MinAsNumpy(), quantization.MaxAsNumpy()))
    return ranges


def plan_workers(remaining: int, sample_seconds: float, processes: int) -> tuple[int, int]:
    """(workers, samples per worker) that finish ``remaining`` samples soonest, each worker starting
    WORKER_START_S late; (0, 0) when no worker would pay for its start."""
    head_start = WORKER_START_S / max(sample_seconds, 1e-9)  # samples done here while a worker starts
    for workers in range(processes - 1, 0, -1):
        each = int((remaining - head_start) / (workers + 1))
        if each >= 1 and each * sample_seconds >= WORKER_START_S:
            return workers, each
    return 0, 0


class _SharedFeed:
    """The representative dataset TFLite's calibrator reads here; hands the tail of the samples to workers."""

    def __init__(self, dataset_gen: Callable, model: bytes, processes: int):
        self.dataset_gen, self.model, self.processes = dataset_gen, model, processes
        self.folder: Path | None = None
        self.parts: list[list] = []
        self.running: list[subprocess.Popen] = []
        self.here = 0
        self.failed: list[str] = []

    @property
    def split(self) -> CalibrationSplit:
        return CalibrationSplit(self.here, tuple(len(p) for p in self.parts), tuple(self.failed))

    def __call__(self) -> Iterator:
        samples = self.dataset_gen()
        probe = list(itertools.islice(samples, PROBE_SAMPLES))
        yield from probe[:-1]
        start = time.perf_counter()
        yield from probe[-1:]
        sample_seconds = time.perf_counter() - start
        rest = list(samples)
        here = self._start_workers(rest, sample_seconds) if all(map(_plain, probe + rest)) else rest
        self.here = len(probe) + len(here)
        yield from here

    def _start_workers(self, rest: list, sample_seconds: float) -> list:
        """Start the workers that calibrate the end of ``rest``; returns the samples left for this process."""
        workers, each = plan_workers(len(rest), sample_seconds, self.processes)
        if not workers:
            return rest
        keep = len(rest) - workers * each
        try:
            self.folder = Path(tempfile.mkdtemp(prefix="edgex-calibration-"))
            (self.folder / "model.tflite").write_bytes(self.model)
            for part in range(workers):
                samples = rest[keep + part * each : keep + (part + 1) * each]
                inputs = {f"input{i}": np.stack([s[i] for s in samples]) for i in range(len(samples[0]))}
                np.savez(self.folder / f"part{part}.npz", **inputs)
                self.running.append(_start_worker(self.folder, part))
                self.parts.append(samples)
        except OSError as exc:  # no room for the files, or no interpreter to start: all of it here
            self._warn(f"calibration workers could not start ({exc})")
            self.close()
            self.parts, self.running = [], []
            return rest
        return rest[:keep]

    def finish(self, calibrate_here: Callable) -> list[bytes]:
        """The workers' calibrated models; a worker that failed has its samples calibrated here instead."""
        done = []
        for part, (process, samples) in enumerate(zip(self.running, self.parts)):
            result = self.folder / f"part{part}.tflite"
            if process.wait() == 0 and result.exists():
                done.append(result.read_bytes())
                continue
            why = _last_line(result.with_suffix(".log")) or f"exit code {process.returncode}"
            self._warn(f"a calibration worker failed ({why})")
            done.append(calibrate_here(lambda samples=samples: iter(samples)))
        return done

    def _warn(self, why: str) -> None:
        self.failed.append(why)
        warnings.warn(f"{why}: those samples are calibrated in this process", RuntimeWarning, stacklevel=3)

    def close(self) -> None:
        """Stop workers still running (the calibration here failed) and remove their files."""
        for process in self.running:
            if process.poll() is None:
                process.kill()
                process.wait()
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)


def _plain(sample) -> bool:
    """A sample given as a list of arrays in input order (signature-keyed samples are calibrated here only)."""
    return isinstance(sample, list) and all(isinstance(x, np.ndarray) for x in sample)


def worker_command(folder: Path, part: int) -> list[str]:
    return [sys.executable, "-m", "converters.calibration", str(folder), str(part)]


def _start_worker(folder: Path, part: int) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with open(folder / f"part{part}.log", "wb") as log:
        command = worker_command(folder, part)
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def _worker(folder: Path, part: int) -> None:
    from tensorflow.lite.python.optimize.calibrator import Calibrator

    inputs = np.load(folder / f"part{part}.npz")
    arrays = [inputs[f"input{i}"] for i in range(len(inputs.files))]
    samples = [[a[n] for a in arrays] for n in range(len(arrays[0]))]
    calibrated = Calibrator((folder / "model.tflite").read_bytes()).calibrate(lambda: iter(samples))
    tmp = folder / f"part{part}.tflite.tmp"
    tmp.write_bytes(calibrated)
    tmp.rename(folder / f"part{part}.tflite")


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), int(sys.argv[2]))
