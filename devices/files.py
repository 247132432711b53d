"""Files that are never half-written: atomic writes, hashes, and where the metadata of an artifact lives."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devices.errors import EdgexError, EnvironmentFault, FileChanged, environment_fault

METADATA_SUFFIX = ".json"


def refuse_overwrite(path: str | os.PathLike, force: bool = False) -> None:
    """Existing outputs are never overwritten silently: one error line unless ``force``."""
    if Path(path).exists() and not force:
        raise EdgexError(f"{path} already exists; pass --force to overwrite it")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, *, overwrite: bool = True, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds.

    A process killed at any moment leaves either the old ``final`` or the new one, never a partial file.
    ``is_dir`` yields a temporary directory instead (for SavedModels). A full disk, a read-only, missing or
    forbidden folder (here or in the block) is an EnvironmentFault that names ``final``, not the temporary path.
    """
    final = Path(final)
    refuse_overwrite(final, overwrite)
    with faults_named(final):
        tmp = _temporary_beside(final, is_dir)
        try:
            yield tmp
            _move_into_place(tmp, final, is_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()


def _temporary_beside(final: Path, is_dir: bool) -> Path:
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file where a folder of the path should be
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)) from exc
    prefix = f".{final.name}.tmp-"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
        os.chmod(tmp, 0o777 & ~_umask())
        return tmp
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=final.suffix, dir=final.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get the usual permissions
    os.close(fd)
    return Path(name)


def _move_into_place(tmp: Path, final: Path, is_dir: bool) -> None:
    if not is_dir:
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    elif final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-[^/]*$")  # a hidden temporary of atomic_path: .NAME.tmp-XYZ


def user_path(path: str | os.PathLike) -> Path:
    """The path the user knows for ``path``: the final path for a temporary of ``atomic_path`` or a file inside one
    (``out/.model.tflite.tmp-ab12.tflite`` -> ``out/model.tflite``), else ``path`` itself."""
    path = Path(path)
    for depth, part in enumerate(path.parts):
        found = _TEMPORARY.match(part)
        if found:
            return Path(*path.parts[:depth], found["name"])
    return path


def path_named_by(exc: BaseException) -> Path | None:
    """The path an OS error is about: its ``filename``, or the first absolute path in the message of a library
    error that wraps one (TensorFlow's)."""
    name = getattr(exc, "filename", None)
    if not name:
        found = re.search(r"(?<![\w.])(/[^\s;:'\"]+)", str(exc))
        name = found.group(1) if found else None
    return Path(os.fsdecode(name)) if name else None


def explained(exc: BaseException, default: str | os.PathLike | None = None) -> EnvironmentFault | None:
    """``exc`` as an EnvironmentFault naming the path as the user knows it (``default``, the path being written,
    when the error names none, names it, a folder of it or a file in it), or None when it is not an OS error edgex
    explains."""
    if isinstance(exc, EnvironmentFault):
        return exc
    named = path_named_by(exc)
    if default is not None and (named is None or _related(user_path(named), Path(default))):
        return environment_fault(exc, default, writing=True)
    if named is None:
        return None
    return environment_fault(exc, user_path(named), writing=user_path(named) != named)  # a temporary is written


def _related(named: Path, default: Path) -> bool:
    return named == default or named in default.parents or default in named.parents


@contextlib.contextmanager
def faults_named(path: str | os.PathLike) -> Iterator[None]:
    """Writing ``path`` in the block: an OS error edgex explains becomes an EnvironmentFault naming it."""
    try:
        yield
    except Exception as exc:
        fault = explained(exc, path)
        if fault is None or fault is exc:
            raise
        raise fault from exc


def file_state(path: str | os.PathLike) -> tuple:
    """What changes when a file, or any file under a folder, is rewritten: each one's inode, size and modification
    time; () when the path does not exist."""
    path = Path(path)
    try:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        return tuple((str(f), s.st_ino, s.st_size, s.st_mtime_ns) for f in files for s in [f.stat()])
    except FileNotFoundError:
        return ()


@contextlib.contextmanager
def read_whole(path: str | os.PathLike) -> Iterator[None]:
    """Reading ``path`` in the block: FileChanged when another process changed it meanwhile (what was read may mix
    two versions, or not be what was hashed), also when the change made the read fail."""
    before = file_state(path)
    try:
        yield
    except Exception as exc:
        if file_state(path) != before:
            raise _changed(path) from exc
        raise
    if file_state(path) != before:
        raise _changed(path)


def _changed(path) -> FileChanged:
    return FileChanged(
        f"{path} changed while edgex was reading it (another process rewrote it); run the command again once "
        "whatever writes it has finished",
        filename=str(path),
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), overwrite=overwrite)


def json_text(obj: Any) -> str:
    """Strict JSON (what every parser reads): dataclasses and numpy values converted, NaN and infinities as null."""
    plain = json.loads(json.dumps(obj, default=_json_default))
    return json.dumps(_finite(plain), indent=2, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_json_atomic(path: str | os.PathLike, obj: Any, *, overwrite: bool = True) -> Path:
    return write_text_atomic(path, json_text(obj), overwrite=overwrite)


def _json_default(obj: Any):
    import dataclasses

    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def utc_now() -> str:
    """An ISO 8601 UTC timestamp for metadata."""
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, or of every file under a directory (names and contents, in sorted order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def file_size(path: str | os.PathLike) -> int:
    """Size in bytes of a file, or of everything under a directory."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def metadata_path(artifact: str | os.PathLike) -> Path:
    """Where the metadata of an artifact lives: ``model.tflite`` -> ``model.tflite.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + METADATA_SUFFIX)
