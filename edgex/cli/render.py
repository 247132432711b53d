"""Rendering results for the terminal (rich) and as JSON; results themselves are plain dataclasses."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

# Without a terminal (pipes, CI logs) rich would wrap at 80 columns; tables read better a little wider.
_width = None if sys.stdout.isatty() else 200
console = Console(highlight=False, width=_width)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)


def print_json(data: Any) -> None:
    from devices.files import json_text

    sys.stdout.write(json_text(data))
    sys.stdout.flush()


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def human_count(n: float | None) -> str:
    if n is None:
        return "-"
    for value, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " K")):
        if abs(n) >= value:
            return f"{n / value:.2f}{suffix}"
    return f"{n:.0f}"


def percent(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    justify_right: Iterable[int] | None = None,
) -> Table:
    """A table; columns all empty make a headerless key-value table."""
    right = set(range(1, len(columns))) if justify_right is None else set(justify_right)
    t = Table(title=title, title_justify="left", header_style="bold", show_header=any(columns))
    for i, name in enumerate(columns):
        t.add_column(name, justify="right" if i in right else "left", no_wrap=i in right)
    for row in rows:
        t.add_row(*("-" if v is None else str(v) for v in row))
    return t


def note(message: str) -> None:
    err_console.print(message)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {message}")
