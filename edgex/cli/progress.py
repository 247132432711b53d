"""Progress display for long jobs: a bar inside each epoch, one line per finished epoch."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgex.cli.render import console


class EpochProgress:
    """Receives ``progress(event, **info)`` calls from ``edgex.training.trainer.train`` and fine-tuning loops."""

    def __init__(self, label: str = "epoch"):
        self.label = label
        self.bar: Progress | None = None
        self.task = None

    def __call__(self, event: str, **info):
        if event == "epoch_begin" and console.is_terminal:
            self.bar = Progress(
                TextColumn(f"{self.label} {info['epoch']}/{info['epochs']}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[metrics]}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("", total=info.get("steps"), metrics="")
        elif event == "batch" and self.bar is not None:
            logs = info.get("logs", {})
            metrics = "  ".join(f"{k} {float(v):.4f}" for k, v in logs.items() if k in ("loss", "accuracy"))
            self.bar.update(self.task, completed=info["step"], metrics=metrics)
        elif event == "epoch_end":
            if self.bar is not None:
                self.bar.stop()
                self.bar = None
            logs = info.get("logs", {})
            parts = [
                f"{k} {float(v):.4f}" for k, v in logs.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")
            ]
            console.print(
                f"{self.label} {info['epoch']:>3}/{info['epochs']}  "
                + "  ".join(parts)
                + f"  {info.get('seconds', 0):.1f}s"
            )
