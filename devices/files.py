"""Files that are never half-written: atomic writes, hashes, and where the metadata of an artifact lives."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devices.errors import EdgexError

METADATA_SUFFIX = ".json"


def refuse_overwrite(path: str | os.PathLike, force: bool = False) -> None:
    """Existing outputs are never overwritten silently: one error line unless ``force``."""
    if Path(path).exists() and not force:
        raise EdgexError(f"{path} already exists; pass --force to overwrite it")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, *, overwrite: bool = True, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds.

    A process killed at any moment leaves either the old ``final`` or the new one, never a partial file.
    ``is_dir`` yields a temporary directory instead (for SavedModels).
    """
    final = Path(final)
    refuse_overwrite(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}.tmp-"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
        os.chmod(tmp, 0o777 & ~_umask())
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=final.suffix, dir=final.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get the usual permissions
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if is_dir:
            if final.exists():
                old = final.with_name(f".{final.name}.old-{os.getpid()}")
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        else:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()


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
