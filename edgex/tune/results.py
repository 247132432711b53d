"""A tune's results as data: every candidate as the study recorded it, the winner with both of its accuracies
and its speed against the default int8 artifact, and what each lever bought."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class CandidateRecord:
    """One trial: the levers it pulled and what was measured."""

    number: int
    status: str  # done, pruned, failed or running
    network: dict
    deployment: dict
    reason: str = ""  # why it was pruned or failed
    artifact: str | None = None
    size_bytes: int | None = None
    selection_top1: float | None = None
    drop_points: float | None = None  # points below the model on the selection split
    passes: bool = False  # within the gate on the selection split
    p50_ms: float | None = None
    p50_ci95: tuple[float, float] | None = None
    incumbent: bool = False  # it beat the incumbent of its time (interleaved A/B beyond the noise)
    heldout_top1: float | None = None  # measured for the winner (and incumbents that failed the held-out check)
    seconds: float | None = None

    @classmethod
    def of(cls, trial) -> CandidateRecord:
        attrs = trial.user_attrs
        status = {"COMPLETE": "done", "PRUNED": "pruned", "FAIL": "failed"}.get(trial.state.name, "running")
        duration = trial.duration.total_seconds() if trial.duration else None
        interval = attrs.get("p50_ci95")
        drop = attrs.get("drop_points")
        return cls(
            number=trial.number,
            status=status,
            network=attrs.get("network", {}),
            deployment=attrs.get("deployment", {}),
            reason=attrs.get("reason", trial.system_attrs.get("fail_reason", "")) if status != "done" else "",
            artifact=attrs.get("artifact"),
            size_bytes=attrs.get("size_bytes"),
            selection_top1=attrs.get("selection_top1"),
            drop_points=drop,
            passes=status == "done" and all(v <= 0 for v in trial.constraints.values()),
            p50_ms=attrs.get("p50_ms"),
            p50_ci95=tuple(interval) if interval else None,
            incumbent=bool(attrs.get("incumbent")),
            seconds=duration,
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Winner:
    """The fastest candidate that passed the gate on the selection split and again on the held-out split."""

    trial: int
    artifact: str  # its copy in the run folder's winner/ folder, with metadata
    runtime: str
    precision: str
    threads: int  # the fastest thread count, from an interleaved sweep over them
    options: dict  # runtime options (the loader's keyword arguments)
    network: dict
    selection_top1: float
    heldout_top1: float
    p50_ms: float
    versus_default: dict  # interleaved A/B against the default int8 artifact at the winner's threads
    threads_sweep: dict = field(default_factory=dict)  # threads -> p50 ms of the winner
    bundle: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LeverRow:
    """What one setting of one lever bought: the fastest candidate that used it and passed the gate."""

    lever: str
    setting: str
    candidates: int  # trials that used this setting
    measured: int  # of which were measured to the end (the others were stopped early or failed)
    passing: int  # of which passed the gate
    best_p50_ms: float | None
    speedup: float | None  # against the default int8 artifact's p50 at the same threads (approximate: other runs)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TuneResult:
    model: str
    data: str
    device: str
    max_drop: float
    budget_s: float
    seconds: float  # the search's wall time in this run (the final checks included)
    float_selection: float  # the model's own top-1 on the selection split
    float_heldout: float  # and on the held-out split
    selection_samples: int
    heldout_samples: int
    winner: Winner | None
    candidates: tuple[CandidateRecord, ...]
    levers: tuple[LeverRow, ...]
    notes: tuple[str, ...] = ()
    out_dir: str = ""
    files: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["counts"] = {s: sum(c.status == s for c in self.candidates) for s in ("done", "pruned", "failed")}
        return data
