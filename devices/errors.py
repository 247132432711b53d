"""The errors edgex anticipates: each one becomes a one-line message and an exit code in the CLI."""

from __future__ import annotations


class EdgexError(Exception):
    """A problem with what the user asked for or gave us (bad value, missing file, absent device).

    The CLI prints ``error: <message>`` on one line and exits with ``exit_code``.
    """

    exit_code = 2


class RuntimeMissing(EdgexError):
    """A runtime or library is not installed; the message names the package to install."""


class ModelFileError(EdgexError):
    """A model file is missing, truncated, corrupt or not a model."""


class DeviceNotFound(EdgexError):
    """The requested device is not present on this machine."""


class InputMismatch(EdgexError):
    """Input data does not match a model's input tensor (shape or dtype)."""


def choice_error(what: str, value: object, allowed) -> EdgexError:
    """An error for a value outside a closed set, quoting the value and every allowed one."""
    return EdgexError(f"unknown {what} {value!r}; choose one of: {', '.join(map(str, allowed))}")


def first_line(error: BaseException | str, limit: int | None = None) -> str:
    """The first non-blank line of an error's message (its type's name when the message is empty), cut at ``limit``
    characters: native libraries raise messages of many lines, and a report or a CLI error shows one."""
    lines = str(error).strip().splitlines()
    line = lines[0] if lines else type(error).__name__ if isinstance(error, BaseException) else ""
    return line[:limit]


def require(module: str, extra: str, purpose: str = ""):
    """Import an optional dependency, or raise RuntimeMissing naming the pip extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        why = f" (needed {purpose})" if purpose else ""
        raise RuntimeMissing(
            f"{module} is not installed{why}: pip install 'edgex[{extra}]'"
            if extra
            else f"{module} is not installed{why}"
        ) from exc
