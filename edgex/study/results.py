"""A study's results as data: per seed, per variant, per claimed ordering, and the whole study."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from edgex.study.config import Claim, StudyConfig
from edgex.study.stats import ALPHA, overlaps, t_interval, verdict, welch_p


@dataclass(frozen=True)
class SeedRun:
    variant: str
    seed: int
    val_top1: float  # validation top-1 after the last epoch
    curve: tuple[float, ...]  # validation top-1 after every epoch
    seconds: float  # training time

    def to_dict(self) -> dict:
        return {**asdict(self), "curve": list(self.curve)}

    @classmethod
    def from_dict(cls, data: dict) -> SeedRun:
        return cls(
            variant=data["variant"],
            seed=int(data["seed"]),
            val_top1=float(data["val_top1"]),
            curve=tuple(data["curve"]),
            seconds=data["seconds"],
        )


@dataclass(frozen=True)
class Latency:
    runtime: str
    precision: str
    p50_ms: float | None  # None when the model could not be converted or run
    valid: bool
    note: str = ""


@dataclass(frozen=True)
class VariantResult:
    name: str
    architecture: str
    model: dict  # the overrides of the preset
    params: int
    macs: int
    runs: tuple[SeedRun, ...]
    latency: tuple[Latency, ...] = ()

    @property
    def top1(self) -> tuple[float, ...]:
        return tuple(run.val_top1 for run in self.runs)

    @property
    def interval(self) -> tuple[float, float | None, float | None]:
        """Mean top-1 with its 95% t-interval (low, high None with one seed)."""
        return t_interval(self.top1)

    def p50(self, runtime: str, precision: str) -> float | None:
        return next((r.p50_ms for r in self.latency if (r.runtime, r.precision) == (runtime, precision)), None)

    def to_dict(self) -> dict:
        mean, low, high = self.interval
        return {
            "name": self.name,
            "architecture": self.architecture,
            "model": self.model,
            "params": self.params,
            "macs": self.macs,
            "top1_mean": mean,
            "top1_ci95": [low, high],
            "top1": list(self.top1),
            "runs": [run.to_dict() for run in self.runs],
            "latency": [asdict(r) for r in self.latency],
        }


@dataclass(frozen=True)
class Comparison:
    claim: Claim
    difference: float  # mean top-1 of better minus worse, in points of accuracy (0..1)
    p: float | None  # Welch's t-test, two-sided
    intervals_overlap: bool | None
    verdict: str  # holds | reversed | unresolved | untested (claims); higher | lower | unresolved (comparisons)

    @classmethod
    def of(cls, claim: Claim, better: VariantResult, worse: VariantResult) -> Comparison:
        difference = better.interval[0] - worse.interval[0]
        p = welch_p(better.top1, worse.top1)
        overlap = overlaps(better.interval[1:], worse.interval[1:])
        return cls(
            claim=claim,
            difference=difference,
            p=p,
            intervals_overlap=overlap,
            verdict=verdict(difference, p, claim.claimed),
        )

    @property
    def sentence(self) -> str:
        c = self.claim
        p = "no test with one seed" if self.p is None else f"Welch p = {self.p:.3f}"
        measured = f"{c.better} - {c.worse} = {100 * self.difference:+.1f} pts top-1 ({p}"
        if self.intervals_overlap is not None:
            measured += f"; 95% intervals {'overlap' if self.intervals_overlap else 'do not overlap'}"
        measured += ")"
        if not c.claimed:
            what = {"higher": "higher than", "lower": "lower than", "unresolved": "not distinguishable from"}
            relation = what.get(self.verdict, "untested against")
            return f"{c.better} vs {c.worse}: {measured}; {c.better} is {relation} {c.worse} ({c.source})."
        meaning = {
            "holds": f"the ordering holds on this data at the {1 - ALPHA:.0%} level",
            "reversed": f"the ordering is reversed on this data at the {1 - ALPHA:.0%} level",
            "unresolved": "this data does not resolve the ordering (difference within seed noise)",
            "untested": "run at least 2 seeds to test it",
        }[self.verdict]
        return f"Claim {c.better} > {c.worse} ({c.source}): {measured}; {meaning}."

    def to_dict(self) -> dict:
        measured = {"difference": self.difference, "p": self.p, "intervals_overlap": self.intervals_overlap}
        return {**asdict(self.claim), **measured, "verdict": self.verdict, "sentence": self.sentence}


@dataclass(frozen=True)
class StudyResult:
    config: StudyConfig
    variants: tuple[VariantResult, ...]
    comparisons: tuple[Comparison, ...]
    seconds: float
    out_dir: str
    cpu: str = ""
    files: dict = field(default_factory=dict)

    def variant(self, name: str) -> VariantResult:
        return next(v for v in self.variants if v.name == name)

    def to_dict(self) -> dict:
        return {
            "study": self.config.study,
            "config": self.config.to_dict(),
            "variants": [v.to_dict() for v in self.variants],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "seconds": self.seconds,
            "cpu": self.cpu,
            "files": self.files,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=str)


__all__ = ["Comparison", "Latency", "SeedRun", "StudyResult", "VariantResult"]
