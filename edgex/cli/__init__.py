"""The ``edgex`` command: a thin Typer shell over the Python API. One module per command, or per pair of related
commands (train and eval, quantize and prune, bench and devices, sweep and compare, deploy and verify), and three
that serve them all: the options they share (options.py), how results (render.py) and progress (progress.py) look.

Importing this module imports no TensorFlow: every command imports what it needs when it runs.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated

import typer

from devices.errors import EdgexError, first_line

app = typer.Typer(
    name="edgex",
    help="Train, optimize, convert, benchmark and deploy Xception on edge devices, and measure what "
    "depthwise separable convolutions buy on your hardware.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain Click help: rich help formatting costs 0.3 s per --help on a 2-core machine
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool):
    if value:
        from edgex import __version__

        typer.echo(f"edgex {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks and native log lines.")] = False,
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = None,
):
    """edgex — Xception from training to the edge."""
    if debug:
        os.environ["EDGEX_DEBUG"] = "1"


def _register():
    from edgex.cli import info, model

    info.register(app)
    app.add_typer(model.app, name="model")
    from edgex.cli import commands

    commands.register(app)


_register()


def _click_exceptions():
    try:  # recent Typer vendors its own copy of Click
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _debug() -> bool:
    return os.environ.get("EDGEX_DEBUG") == "1"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for bad input, 3 for a failed accuracy gate, 4-8 for a full disk, a
    read-only or missing folder, no permission or a file changed while read; see the README)."""
    debug_before = os.environ.get("EDGEX_DEBUG")
    try:
        return _main(argv)
    finally:  # --debug lasts for one invocation, also when main() is called from Python
        if debug_before is None:
            os.environ.pop("EDGEX_DEBUG", None)
        else:
            os.environ["EDGEX_DEBUG"] = debug_before


def _main(argv: list[str] | None) -> int:
    click = _click_exceptions()
    try:
        result = app(args=argv, prog_name="edgex", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except (getattr(click, "Exit", typer.Exit), typer.Exit) as exc:
        return exc.exit_code
    except click.ClickException as exc:
        message = exc.format_message().replace("\n", " ")
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        print(f"error: {message}{hint}", file=sys.stderr)
        return exc.exit_code
    except (getattr(click, "Abort", typer.Abort), typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        return 130
    except EdgexError as exc:
        if _debug():
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # an OS error a library let through, an edgex bug or an unexpected library failure
        from devices.files import explained

        if _debug():
            traceback.print_exc()
        fault = explained(exc)  # a full disk, a read-only or missing folder, no permission: one line, its own code
        if fault is not None:
            print(f"error: {fault}", file=sys.stderr)
            return fault.exit_code
        line = first_line(str(exc), 300)  # a bare message: the type is printed before it
        print(f"error: {type(exc).__name__}: {line} (run 'edgex --debug ...' for the traceback)", file=sys.stderr)
        return 1
