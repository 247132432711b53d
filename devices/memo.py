"""Outputs kept per model content and per sample, so that checking and evaluating one file in one process (the
parity samples, then the validation split they are drawn from) runs each sample through it once."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

OUTPUTS_KEPT = 200_000  # rows (a 1000-class output is 4 KB: at most 800 MB; the oldest go first)
_OUTPUTS: OrderedDict[tuple, np.ndarray] = OrderedDict()


def sample_digest(sample: np.ndarray) -> bytes:
    """What identifies one input sample: its dtype, shape and bytes."""
    sample = np.ascontiguousarray(sample)
    return hashlib.blake2b(f"{sample.dtype}{sample.shape}".encode() + sample.tobytes(), digest_size=16).digest()


def kept_outputs(
    model_key: tuple, x: np.ndarray, compute: Callable[[np.ndarray], np.ndarray], digests: list[bytes] | None = None
) -> np.ndarray:
    """``compute(x)`` (the first output of a model identified by ``model_key``), where samples seen before with the
    same key are not computed again."""
    keys = [(*model_key, d) for d in (digests or [sample_digest(sample) for sample in x])]
    missing = [i for i, key in enumerate(keys) if key not in _OUTPUTS]
    if missing:
        for i, row in zip(missing, np.asarray(compute(x[missing]))):
            _OUTPUTS[keys[i]] = row
        while len(_OUTPUTS) > OUTPUTS_KEPT:
            _OUTPUTS.popitem(last=False)
    return np.stack([_OUTPUTS[key] for key in keys])


def forget_outputs() -> None:
    _OUTPUTS.clear()
