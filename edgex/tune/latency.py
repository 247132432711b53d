"""Where a search measures latency: this machine's CPU, GPU or Edge TPU. Every comparison is an interleaved A/B
(devices.interleave): the incumbent and the candidate loaded in one process, at the same thread count, timed in
turn; the candidate is faster only when the ratio's whole confidence interval clears the noise margin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devices.bench import BenchConfig
from devices.interleave import InterleavedRuns, LatencyRatio

# Warm up briefly, then at least 30 rounds and half a second per model (thousands of rounds for a 0.2 ms model).
AB_BENCH = BenchConfig(warmup=3, min_warmup_seconds=0.1, runs=30, min_seconds=0.5, max_seconds=30.0)


@dataclass(frozen=True)
class Placed:
    """An artifact and how it runs: what an A/B compares."""

    path: Path
    runtime: str  # litert, onnxruntime or edgetpu
    options: tuple[tuple[str, object], ...] = ()  # the loader's keyword arguments (runtime options)

    @property
    def load_options(self) -> dict:
        return dict(self.options)


class LocalDevice:
    """Latency on this machine: ``device`` is what devices.load_model takes (cpu, gpu:0, edgetpu:usb ...)."""

    def __init__(self, device: str = "cpu", config: BenchConfig = AB_BENCH):
        from devices.sysinfo import usable_cores

        _check_present(device)
        self.device, self.config = device, config
        self.cores = usable_cores()
        self.name = device

    def _device_for(self, placed: Placed) -> str:
        return self.device if placed.runtime != "edgetpu" or self.device.startswith("edgetpu") else "edgetpu"

    def _load(self, placed: Placed, threads: int):
        from devices.registry import load_model

        runtime = "litert" if placed.runtime == "edgetpu" else placed.runtime
        device = self._device_for(placed)
        return load_model(placed.path, runtime=runtime, device=device, threads=threads, **placed.load_options)

    def alone(self, placed: Placed, threads: int):
        """One artifact's BenchResult (the first candidate has nothing to be compared with)."""
        from devices.bench import measure

        with self._load(placed, threads) as model:
            return measure(model, self.config)

    def runs(self, models: Sequence[Placed], threads: Sequence[int]) -> InterleavedRuns:
        """Several placed artifacts (each at its thread count) timed interleaved in this process."""
        from contextlib import ExitStack

        from devices.interleave import interleave

        with ExitStack() as stack:
            loaded = [stack.enter_context(self._load(m, count)) for m, count in zip(models, threads)]
            return interleave(loaded, self.config)

    def threads_sweep(self, placed: Placed, threads: tuple[int, ...]) -> dict[int, float]:
        """The p50 of one artifact at each thread count, the counts interleaved."""
        if len(threads) < 2:
            return {}
        runs = self.runs([placed] * len(threads), list(threads))
        return {count: result.latency.p50 for count, result in zip(threads, runs.results)}

    def ab(self, incumbent: Placed, candidate: Placed, threads: int) -> LatencyRatio:
        """incumbent / candidate: above 1 (beyond the noise) when the candidate is faster."""
        return self.runs([incumbent, candidate], [threads, threads]).ratio(0, 1)


def _check_present(device: str) -> None:
    """A device that is not on this machine is bad input, refused before any work."""
    from devices.errors import DeviceNotFound
    from devices.registry import available_devices, parse_device

    kind, rest = parse_device(device)
    if kind == "cpu":
        return
    names = [d.name for d in available_devices(probe_tensorflow=False)]
    if not any(name == device or (name.split(":")[0] == kind and not rest) for name in names):
        raise DeviceNotFound(f"device {device!r} is not present on this machine; present: {', '.join(names)}")
