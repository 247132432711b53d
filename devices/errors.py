"""The errors edgex anticipates: each one becomes a one-line message and an exit code in the CLI."""

from __future__ import annotations

import errno
import os


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


class EnvironmentFault(EdgexError, OSError):
    """The machine refused a file operation: the message names the path the user gave, the cause in words and what
    to do. Still an OSError (with ``errno`` and ``filename``), for code that catches those."""

    exit_code = 1

    def __init__(self, message: str, code: int | None = None, filename: str | None = None):
        OSError.__init__(self, message)
        self.errno, self.filename = code, filename

    def __str__(self) -> str:
        return self.args[0]


class DiskFull(EnvironmentFault):
    exit_code = 4


class ReadOnlyFolder(EnvironmentFault):
    exit_code = 5


class FolderMissing(EnvironmentFault):
    exit_code = 6


class PermissionDenied(EnvironmentFault):
    exit_code = 7


class FileChanged(EnvironmentFault):
    """A file changed while edgex read it (another process rewrote it): what was read may mix two versions."""

    exit_code = 8


# errno -> (the error, the cause in words, what to do); {folder}: the folder of the path, {free}: its free space.
_FAULTS = {
    errno.ENOSPC: (DiskFull, "not enough space on its disk ({free} free in {folder})", "free space or choose another"),
    errno.EDQUOT: (DiskFull, "the disk quota is used up ({free} left in {folder})", "free space or choose another"),
    errno.EROFS: (ReadOnlyFolder, "{folder} is on a read-only file system", "choose a writable folder"),
    errno.ENOENT: (FolderMissing, "the folder {folder} does not exist (removed or unmounted?)", "create it"),
    errno.ENOTDIR: (FolderMissing, "a part of {folder} is a file, not a folder", "choose another path"),
    errno.EACCES: (PermissionDenied, "permission denied in {folder}", "change its permissions or choose another"),
    errno.EPERM: (PermissionDenied, "not permitted in {folder}", "change its permissions or choose another"),
}


def fault_errno(exc: BaseException) -> int | None:
    """The errno of an OS error edgex explains, also when a library wraps it in its own error (TensorFlow's saver
    raises ResourceExhaustedError "...; No space left on device", h5py an OSError without errno); else None."""
    code = getattr(exc, "errno", None)
    if code in _FAULTS:
        return code
    text = str(exc)
    return next((code for code in _FAULTS if os.strerror(code) in text), None)


def environment_fault(exc: BaseException, path: str | os.PathLike, writing: bool = False) -> EnvironmentFault | None:
    """``exc`` as one line that names ``path`` (the path the user gave), the cause and what to do; None when it is
    not an OS error edgex explains. ``writing``: ``path`` is being written (a full or read-only disk say so)."""
    code = fault_errno(exc)
    if code is None:
        return None
    kind, cause, remedy = _FAULTS[code]
    action = "write" if writing or code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else "use"
    folder = os.path.dirname(os.fspath(path)) or "."
    if code == errno.ENOENT and action != "write":  # what is missing is the file itself
        cause, remedy = "it does not exist (removed or unmounted?)", "check the path"
    cause = cause.format(folder=folder, free=_free_space(folder))
    return kind(f"cannot {action} {path}: {cause}; {remedy}", code, str(path))


def _free_space(folder: str) -> str:
    import shutil

    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        free = shutil.disk_usage(folder or ".").free
    except OSError:
        return "unknown space"
    return f"{free / 2**20:.1f} MiB" if free >= 2**20 else f"{free / 2**10:.0f} KiB"


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
