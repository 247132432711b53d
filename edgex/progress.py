"""One progress protocol for every long job: the library calls ``progress(event)`` with one of the typed events
below, and the CLI renders them (``edgex/cli/progress.py``); library code never prints.

A new kind of event is one more frozen dataclass deriving from ``Event``. Receivers let the events they have no use
for pass, so a new event never breaks an old receiver.

>>> seen = []
>>> train(config, "runs/train", progress=seen.append)    # doctest: +SKIP
>>> [type(e).__name__ for e in seen][:3]                  # doctest: +SKIP
['Note', 'PhaseBegin', 'EpochBegin']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    """What every progress event is."""


@dataclass(frozen=True)
class Note(Event):
    """One line the user should read (which kernel grouped convolutions train on, a study's finished step...)."""

    text: str
    warning: bool = False  # something is likely wrong with the result (shown as a warning)


@dataclass(frozen=True)
class WeightsLoaded(Event):
    """Where a training's starting weights came from: a ``WeightsReport``, or the ``FromModel`` of ``--from``."""

    report: object  # has summary_lines()


@dataclass(frozen=True)
class PhaseBegin(Event):
    """A phase of a training run starts (a fine-tuning has two: the head alone, then the top blocks)."""

    number: int  # 1-based
    phases: int
    text: str  # what trains, for how long
    blocks: tuple[str, ...]  # the blocks that train


@dataclass(frozen=True)
class EpochBegin(Event):
    epoch: int  # 1-based, within the phase
    epochs: int
    steps: int | None  # optimizer steps in the epoch, when known


@dataclass(frozen=True)
class BatchEnd(Event):
    step: int  # 1-based, within the epoch
    metrics: dict[str, float]  # the running loss and accuracy


@dataclass(frozen=True)
class EpochEnd(Event):
    epoch: int
    epochs: int
    metrics: dict[str, float]  # loss, accuracy and their val_ twins
    seconds: float


@dataclass(frozen=True)
class Measured(Event):
    """One result of a job that measures many things: a sweep's layer, a comparison's model, a deployment's host."""

    row: object  # the result's own dataclass (SweepRow, CompareRow, HostResult)
    index: int  # 1-based
    total: int


Progress = Callable[[Event], None]


def notes_once(progress: Progress | None) -> Progress | None:
    """A receiver that passes each distinct Note to ``progress`` once and nothing else: for a job that runs several
    trainings and tells the user what they say once (a study)."""
    if progress is None:
        return None
    said: set[str] = set()

    def forward(event: Event) -> None:
        if isinstance(event, Note) and event.text not in said:
            said.add(event.text)
            progress(event)

    return forward
