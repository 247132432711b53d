"""How the events of ``edgex.progress`` look on the terminal: notes as lines, a bar inside each epoch, one line per
finished epoch. The library only sends events; every line a long job prints is written here or in its command."""

from __future__ import annotations

from collections.abc import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgex.cli.render import console, note, warn
from edgex.progress import BatchEnd, EpochBegin, EpochEnd, Event, Note


class TrainingProgress:
    """Renders the events of ``edgex.training.trainer.train`` and ``fine_tune``: Notes through ``say`` (stderr by
    default), epochs as bars and lines; other events pass. Subclasses add views in ``views``."""

    def __init__(self, label: str = "epoch", say: Callable[[str], None] = note):
        self.label = label
        self.say = say
        self.bar: Progress | None = None
        self.task = None
        self.warned: list[str] = []  # the warnings shown while it ran (a command's summary need not repeat them)
        self.views = {
            Note: self.note,
            EpochBegin: self.epoch_begin,
            BatchEnd: self.batch_end,
            EpochEnd: self.epoch_end,
        }

    def __call__(self, event: Event) -> None:
        view = self.views.get(type(event))
        if view is not None:
            view(event)

    def note(self, event: Note) -> None:
        if event.warning:
            warn(event.text)
            self.warned.append(event.text)
        else:
            self.say(event.text)

    def epoch_begin(self, event: EpochBegin) -> None:
        if not console.is_terminal:
            return
        self.bar = Progress(
            TextColumn(f"{self.label} {event.epoch}/{event.epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.bar.start()
        self.task = self.bar.add_task("", total=event.steps, metrics="")

    def batch_end(self, event: BatchEnd) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=event.step, metrics=_metrics(event.metrics, ("loss", "accuracy")))

    def epoch_end(self, event: EpochEnd) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        metrics = _metrics(event.metrics, ("loss", "accuracy", "val_loss", "val_accuracy"))
        console.print(f"{self.label} {event.epoch:>3}/{event.epochs}  {metrics}  {event.seconds:.1f}s")


def _metrics(metrics: dict[str, float], names: tuple[str, ...]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k in names)


def only(kind: type[Event], show: Callable) -> Callable[[Event], None]:
    """A receiver that shows the events of one kind and lets the others pass."""

    def receive(event: Event) -> None:
        if isinstance(event, kind):
            show(event)

    return receive
