"""The one small interface every runtime backend implements: load, input/output details, run, close."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from devices.errors import InputMismatch


@dataclass(frozen=True)
class TensorInfo:
    """An input or output tensor as the runtime sees it; ``scale == 0`` means not quantized."""

    name: str
    shape: tuple[int, ...]  # -1 marks a dynamic dimension
    dtype: str  # numpy dtype name: float32, int8, uint8, ...
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(np.dtype(self.dtype), np.integer)

    @property
    def batch(self) -> int | None:
        """The fixed batch size, or None when the batch dimension is dynamic."""
        return None if not self.shape or self.shape[0] < 1 else int(self.shape[0])

    def describe(self) -> str:
        q = f" (scale {self.scale:.6g}, zero point {self.zero_point})" if self.quantized else ""
        return f"{self.name} {list(self.shape)} {self.dtype}{q}"


def quantize(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Float values -> the integer type of a quantized tensor, with its scale and zero point."""
    dtype = np.dtype(info.dtype)
    limits = np.iinfo(dtype)
    q = np.round(np.asarray(x, dtype=np.float32) / np.float32(info.scale)) + info.zero_point
    return np.clip(q, limits.min, limits.max).astype(dtype)


def dequantize(q: np.ndarray, info: TensorInfo) -> np.ndarray:
    return ((np.asarray(q).astype(np.float32) - np.float32(info.zero_point)) * np.float32(info.scale)).astype(
        np.float32
    )


class LoadedModel(abc.ABC):
    """A model loaded into a runtime on a device.

    ``run`` takes and returns tensors exactly as the model declares them; ``predict`` takes float input
    (already preprocessed), quantizes it if the model's input is quantized, runs any batch size by chunks the
    model accepts, and returns float outputs. ``set_inputs`` + ``invoke`` are the benchmark's hot loop.
    """

    runtime: str = ""
    device: str = "cpu"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- what a backend implements -------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def inputs(self) -> list[TensorInfo]: ...

    @property
    @abc.abstractmethod
    def outputs(self) -> list[TensorInfo]: ...

    @abc.abstractmethod
    def set_inputs(self, arrays: Sequence[np.ndarray]) -> None:
        """Place input arrays (already of the model's dtype and shape) for the next ``invoke``."""

    @abc.abstractmethod
    def invoke(self) -> None:
        """Run the model once on the inputs last set."""

    @abc.abstractmethod
    def get_outputs(self) -> list[np.ndarray]: ...

    def resize_batch(self, batch: int) -> None:  # noqa: B027 - runtimes with dynamic shapes need nothing here
        """Make the model accept ``batch`` samples (only called when the batch dimension is dynamic)."""

    def close(self) -> None:  # noqa: B027 - most runtimes free their session when it is collected
        pass

    @property
    def version(self) -> str:
        return ""

    # -- shared behaviour ----------------------------------------------------------------------------------
    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        arrays = list(arrays)
        self.check_inputs(arrays)
        batch = arrays[0].shape[0] if arrays and arrays[0].ndim else 1
        if self.inputs[0].batch is None:
            self.resize_batch(batch)
        self.set_inputs(arrays)
        self.invoke()
        return self.get_outputs()

    def check_inputs(self, arrays: Sequence[np.ndarray]) -> None:
        if len(arrays) != len(self.inputs):
            raise InputMismatch(f"model expects {len(self.inputs)} input(s), got {len(arrays)}")
        for array, info in zip(arrays, self.inputs):
            if array.dtype != np.dtype(info.dtype):
                raise InputMismatch(f"input {info.name!r}: expected dtype {info.dtype}, got {array.dtype}")
            fixed = [(i, d) for i, d in enumerate(info.shape) if d > 0 and not (i == 0 and info.batch is None)]
            if array.ndim != len(info.shape) or any(array.shape[i] != d for i, d in fixed):
                raise InputMismatch(f"input {info.name!r}: expected shape {list(info.shape)}, got {list(array.shape)}")

    def sample_inputs(self, batch: int | None = None, seed: int = 0) -> list[np.ndarray]:
        """Random inputs of the right shape and dtype (uniform over [-1, 1], or over the integer range)."""
        rng = np.random.default_rng(seed)
        arrays = []
        for info in self.inputs:
            shape = [batch or info.batch or 1] + [d if d > 0 else 1 for d in info.shape[1:]]
            dtype = np.dtype(info.dtype)
            if np.issubdtype(dtype, np.integer):
                limits = np.iinfo(dtype)
                arrays.append(rng.integers(limits.min, int(limits.max) + 1, size=shape, dtype=dtype))
            else:
                arrays.append(rng.uniform(-1, 1, size=shape).astype(dtype))
        return arrays

    def encode_input(self, x: np.ndarray) -> np.ndarray:
        """Float (preprocessed) samples -> the first input's dtype, quantized with its scale and zero point."""
        info = self.inputs[0]
        return quantize(x, info) if info.quantized else np.asarray(x).astype(np.dtype(info.dtype))

    def decode_outputs(self, outputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Outputs as float, dequantized where the model's outputs are quantized."""
        return [
            dequantize(o, info) if info.quantized else np.asarray(o).astype(np.float32)
            for o, info in zip(outputs, self.outputs)
        ]

    def predict(self, x: np.ndarray, max_batch: int = 64) -> np.ndarray:
        """Float input (N, ...) -> float output of the first output tensor (N, ...)."""
        return self.predict_all(x, max_batch=max_batch)[0]

    def predict_all(self, x: np.ndarray, max_batch: int = 64) -> list[np.ndarray]:
        inp = self.inputs[0]
        x = np.asarray(x, dtype=np.float32)
        step = inp.batch or max_batch
        if x.shape[0] % step and inp.batch is not None and inp.batch != 1:
            raise InputMismatch(
                f"input {inp.name!r} has a fixed batch of {inp.batch}; {x.shape[0]} samples do not divide into it"
            )
        chunks: list[list[np.ndarray]] = []
        for start in range(0, x.shape[0], step):
            chunks.append(self.decode_outputs(self.run([self.encode_input(x[start : start + step])])))
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(self.outputs))]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def describe(self) -> dict:
        return {
            "runtime": self.runtime,
            "runtime_version": self.version,
            "device": self.device,
            "inputs": [i.describe() for i in self.inputs],
            "outputs": [o.describe() for o in self.outputs],
        }
