"""What a sweep measures, as data: the roofs, one row per layer shape, variant, runtime and precision, and the
whole sweep (written by ``sweep_report``, produced by ``sweep``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from devices.bench import BenchResult


@dataclass(frozen=True)
class Roof:
    runtime: str
    precision: str
    compute_gops: float  # attainable operations per second (2 per MAC), in G/s
    bandwidth_gbs: float  # attainable bytes per second, in GB/s

    @property
    def ridge(self) -> float:
        """Arithmetic intensity (ops/byte) where a layer stops being memory-bound."""
        return self.compute_gops / self.bandwidth_gbs

    def attainable(self, intensity: float) -> float:
        return min(self.compute_gops, intensity * self.bandwidth_gbs)


@dataclass(frozen=True)
class SweepRow:
    shape: str
    variant: str
    runtime: str
    precision: str
    h: int
    w: int
    c_in: int
    c_out: int
    k: int
    stride: int
    macs: int
    params: int
    bytes_moved: int
    intensity: float  # ops per byte
    p50_ms: float
    gops: float  # achieved G(FL)OP/s: 2 * MACs / p50
    roof_fraction: float  # achieved / attainable at this intensity
    valid: bool
    count: int = 1  # how many layers of the network have this shape
    groups: int = 0  # segments G of a "segments:..." variant
    placement: str = ""  # where the runtime ran the layer's convolutions (delegated / fallback), for segments


@dataclass(frozen=True)
class SweepResult:
    rows: tuple[SweepRow, ...]
    roofs: tuple[Roof, ...]
    speedups: tuple[dict, ...]  # per shape, runtime, precision: measured and theoretical separable speedup
    bench: tuple[BenchResult, ...]
    out_dir: str
    seconds: float
    files: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "roofs": [{**asdict(r), "ridge": r.ridge} for r in self.roofs],
            "rows": [asdict(r) for r in self.rows],
            "speedups": list(self.speedups),
            "seconds": self.seconds,
            "files": self.files,
        }


def rows_and_roofs(data: dict) -> tuple[tuple[SweepRow, ...], tuple[Roof, ...]]:
    """A sweep.json's rows and roofs, as the dataclasses ``SweepResult.to_dict`` wrote them from."""
    roofs = tuple(Roof(**{k: v for k, v in r.items() if k != "ridge"}) for r in data["roofs"])
    return tuple(SweepRow(**r) for r in data["rows"]), roofs
