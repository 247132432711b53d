"""The one small interface every runtime backend implements: load, input/output details, run, close."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from devices.errors import InputMismatch, first_line
from devices.files import file_state, sha256_file
from devices.memo import kept_outputs

BATCH_MEMORY_BYTES = 1 << 30  # activations of one batch in ``predict``
# Float elements alive per input element, at most: Xception at 299 px keeps 26 alive at its peak (layer outputs
# counted until their last reader), its largest one alone 10; the rest is room for the runtime's scratch buffers.
ACTIVATIONS_PER_INPUT = 40


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


def _same_outputs(alone: list[list[np.ndarray]], together: list[np.ndarray], infos: Sequence[TensorInfo]) -> bool:
    """Whether a batch's outputs are each sample's own outputs: equal within a quantization step, or within float
    rounding (batched kernels may sum in another order)."""
    for i, info in enumerate(infos):
        single = np.concatenate([np.asarray(a[i]) for a in alone]).astype(np.float64)
        batched = np.asarray(together[i]).astype(np.float64)
        if single.shape != batched.shape:
            return False
        step = 1.0 if info.quantized else 1e-4 * max(1.0, float(np.abs(single).max(initial=0.0)))
        if not np.all(np.abs(single - batched) <= step):
            return False
    return True


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
    batch_note: str = ""  # why a fixed-batch model runs one sample at a time in ``predict`` (empty when it batches)
    runs_its_file = False  # the loaded model is exactly the file's content (not, say, an in-memory Keras model)

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._batches: bool | None = None  # whether a batch-1 model also runs batches; None: not probed yet
        self._content: str | None = None  # the file's digest once ``predict`` needs it; "" when outputs are not kept
        self._loaded_state = file_state(self.path)  # the file as loaded (devices.load_model checks it did not change)

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

    def prepare(self, samples: int) -> None:
        """Build what running ``samples`` samples through ``predict`` would build on its first run, without running
        any: the batch probe of a file saved with a batch of 1 (runtimes add their own, such as a traced graph)."""
        if samples > 1 and self.inputs[0].batch == 1 and self.fitting_batch() > 1:
            self.batches_allowed()

    def _enable_batches(self) -> bool:
        """Let a model saved with a batch of 1 take several samples per run; False where the runtime cannot."""
        return False

    def _disable_batches(self) -> None:  # noqa: B027 - only runtimes that enable batches undo it
        """Undo ``_enable_batches``."""

    @property
    def version(self) -> str:
        return ""

    # -- shared behaviour ----------------------------------------------------------------------------------
    def run(self, arrays: Sequence[np.ndarray], *, any_batch: bool = False) -> list[np.ndarray]:
        """Run once; ``any_batch``: the batch dimension is free (a dynamic one, or one ``batches_allowed`` opened)."""
        arrays = list(arrays)
        free = any_batch or self.inputs[0].batch is None
        self.check_inputs(arrays, free_batch=free)
        batch = arrays[0].shape[0] if arrays and arrays[0].ndim else 1
        if free or self._batches:  # also back to one sample after batches
            self.resize_batch(batch)
        self.set_inputs(arrays)
        self.invoke()
        return self.get_outputs()

    def check_inputs(self, arrays: Sequence[np.ndarray], free_batch: bool = False) -> None:
        if len(arrays) != len(self.inputs):
            raise InputMismatch(f"model expects {len(self.inputs)} input(s), got {len(arrays)}")
        for array, info in zip(arrays, self.inputs):
            if array.dtype != np.dtype(info.dtype):
                raise InputMismatch(f"input {info.name!r}: expected dtype {info.dtype}, got {array.dtype}")
            free = free_batch or info.batch is None
            fixed = [(i, d) for i, d in enumerate(info.shape) if d > 0 and not (i == 0 and free)]
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

    def predict(self, x: np.ndarray, max_batch: int | None = None) -> np.ndarray:
        """Float input (N, ...) -> float output of the first output tensor (N, ...). Samples this file already ran
        in this process, in the same runtime on the same device, are not run again."""
        key = self._outputs_key()
        if key is None:
            return self.predict_all(x, max_batch=max_batch)[0]
        x = np.asarray(x, dtype=np.float32)
        return kept_outputs(key, x, lambda todo: self.predict_all(todo, max_batch=max_batch)[0])

    def _outputs_key(self) -> tuple | None:
        """What identifies this model's outputs across loads; None when they are not kept (a model that is not its
        file, a fixed batch above 1 that subsets of samples would not fit)."""
        if self._content is None:
            batch = self.inputs[0].batch
            keep = self.runs_its_file and batch in (None, 1) and self.path.is_file()
            self._content = self._loaded_digest() if keep else ""
        return (self.runtime, self.device, self._content) if self._content else None

    def _loaded_digest(self) -> str:
        """The file's digest, or "" when the file is no longer the one loaded (rewritten since): its outputs would
        be kept under another content."""
        if file_state(self.path) != self._loaded_state:
            return ""
        digest = sha256_file(self.path)
        return digest if file_state(self.path) == self._loaded_state else ""

    def predict_all(self, x: np.ndarray, max_batch: int | None = None) -> list[np.ndarray]:
        """Outputs for any number of samples, in batches of up to ``max_batch`` (default: what fits in memory)
        where the model takes batches; a model saved with a batch of 1 is run in batches too when it allows it."""
        inp = self.inputs[0]
        x = np.asarray(x, dtype=np.float32)
        max_batch = max_batch or self.fitting_batch()
        free = inp.batch is None or (
            inp.batch == 1 and max_batch > 1 and (self._batches or (len(x) > 1 and self.batches_allowed()))
        )
        step = max_batch if free else inp.batch
        if x.shape[0] % step and not free and inp.batch != 1:
            raise InputMismatch(
                f"input {inp.name!r} has a fixed batch of {inp.batch}; {x.shape[0]} samples do not divide into it"
            )
        chunks: list[list[np.ndarray]] = []
        for start in range(0, x.shape[0], step):
            outputs = self.run([self.encode_input(x[start : start + step])], any_batch=free)
            chunks.append(self.decode_outputs(outputs))
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(self.outputs))]

    def fitting_batch(self, budget_bytes: int = BATCH_MEMORY_BYTES, most: int = 64) -> int:
        """The largest power-of-two batch (up to ``most``) whose activations fit ``budget_bytes``, estimated
        from the input size: ``ACTIVATIONS_PER_INPUT`` float elements per input element."""
        elements = int(np.prod([d if d > 0 else 1 for d in self.inputs[0].shape[1:]]))
        per_sample = 4 * ACTIVATIONS_PER_INPUT * max(elements, 1)
        batch = 1
        while batch * 2 <= most and batch * 2 * per_sample <= budget_bytes:
            batch *= 2
        return batch

    def batches_allowed(self) -> bool:
        """Whether this batch-1 model runs several samples per run with the same outputs as one at a time: probed
        once on two random samples; ``batch_note`` says why not when it does not."""
        if self._batches is None:
            self._batches = self._probe_batches()
        return self._batches

    def _probe_batches(self) -> bool:
        probe = self.sample_inputs(2)
        alone = [self.run([a[i : i + 1] for a in probe]) for i in range(2)]
        together, why = None, "the runtime cannot resize its input"
        try:
            if self._enable_batches():
                together = self.run(probe, any_batch=True)
        except Exception as exc:  # runtimes raise their own types when a graph does not take another batch
            why = first_line(exc, 160)
        if together is not None and _same_outputs(alone, together, self.outputs):
            return True
        if together is not None:
            why = "its outputs for a batch differ from those for one sample at a time"
        self._disable_batches()
        self.batch_note = f"{self.path.name} runs one sample at a time ({why})"
        return False

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
