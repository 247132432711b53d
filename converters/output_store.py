"""The source model's outputs kept on disk between commands.

Every export's parity check compares with the source's outputs on the same samples, and quantize's float accuracy
runs the source on the validation split those samples come from. At paper scale that is 12-20 s of Keras per
command. Kept here, by the source file's content and TensorFlow's version, one file per source, row by row by
the digest of each input sample (its dtype, shape and bytes): another file, other samples or another
preprocessing are inputs never seen, and are computed.

The folder is ``$EDGEX_CACHE_DIR`` (``off`` turns the store off), by default ``$XDG_CACHE_HOME/edgex`` or
``~/.cache/edgex``; at most STORE_MAX_BYTES, the least recently used sources go first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from devices.files import atomic_path
from devices.memo import sample_digest

STORE_MAX_BYTES = 256 << 20


def store_folder() -> Path | None:
    """Where source outputs are kept; None when ``EDGEX_CACHE_DIR=off``."""
    chosen = os.environ.get("EDGEX_CACHE_DIR", "")
    if chosen.lower() == "off":
        return None
    if chosen:
        return Path(chosen) / "outputs"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgex" / "outputs"


def stored_outputs(key: str, x: np.ndarray, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``compute(x)``, where rows kept under ``key`` for the same samples are read instead of computed."""
    folder = store_folder()
    if folder is None or len(x) == 0:
        return np.asarray(compute(x))
    path = folder / f"{key}.npz"
    kept = _read(path)
    digests = [sample_digest(sample) for sample in x]
    missing = [i for i, digest in enumerate(digests) if digest not in kept]
    if missing:
        kept.update(zip((digests[i] for i in missing), np.asarray(compute(x[missing]))))
        _write(path, kept)
    else:
        path.touch()
    return np.stack([kept[digest] for digest in digests])


def _read(path: Path) -> dict[bytes, np.ndarray]:
    try:
        with np.load(path) as stored:
            return dict(zip((bytes(d) for d in stored["digests"]), stored["outputs"]))
    except (OSError, KeyError, ValueError):  # not there yet, or unreadable: computed again and rewritten
        return {}


def _write(path: Path, kept: dict[bytes, np.ndarray]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        digests = np.frombuffer(b"".join(kept), np.uint8).reshape(len(kept), -1)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, digests=digests, outputs=np.stack(list(kept.values())))
        _trim(path.parent)
    except (OSError, ValueError):  # a read-only or full disk, or rows of another shape: only the reuse is lost
        pass


def _trim(folder: Path) -> None:
    files = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    total = 0
    for path in files:
        total += path.stat().st_size
        if total > STORE_MAX_BYTES:
            path.unlink(missing_ok=True)
