"""LiteRT (TensorFlow Lite) backend: ``ai_edge_litert``, or ``tflite_runtime`` on old Raspberry Pi OS images."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from devices.base import LoadedModel, TensorInfo
from devices.errors import EdgexError, ModelFileError, RuntimeMissing, first_line
from devices.logs import quiet_native_logs

TFLITE_IDENTIFIER = b"TFL3"


# The Python packages that provide a LiteRT interpreter, in the order they are tried: (module, distribution).
INTERPRETERS = (("ai_edge_litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime"))


def interpreter_module(name: str | None = None):
    """The LiteRT interpreter module: ``name`` (ai_edge_litert or tflite_runtime) if given, else the first installed."""
    import importlib

    names = [m for m, _ in INTERPRETERS if name in (None, m)]
    if not names:
        raise EdgexError(f"unknown LiteRT interpreter {name!r}; choose one of: {', '.join(m for m, _ in INTERPRETERS)}")
    for module in names:
        try:
            return importlib.import_module(f"{module}.interpreter")
        except ImportError as exc:
            error = exc
    raise RuntimeMissing(
        f"{name} cannot be imported ({first_line(error)})"
        if name
        else "no LiteRT runtime is installed: pip install ai-edge-litert (or 'edgex[runtime]'); "
        "tflite-runtime works as a fallback on old Raspberry Pi OS images"
    ) from error


def runtime_version(module=None) -> str:
    """'ai-edge-litert 2.1.6': the distribution of ``module`` (an interpreter module), else the first installed."""
    for name, dist in INTERPRETERS:
        if module is not None and not module.__name__.startswith(name):
            continue
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def check_runtime_supports(content: bytes, module, path: Path) -> None:
    """Refuse a model that needs a newer runtime than tflite-runtime (whose version is the TFLite runtime's)."""
    from devices.tflite_schema import min_runtime_version, version_tuple

    if not module.__name__.startswith("tflite_runtime"):
        return  # ai-edge-litert numbers its releases on its own: its runtime is newer than any tflite-runtime
    needed = min_runtime_version(content)
    have = runtime_version(module).rpartition(" ")[2]
    if needed and have and version_tuple(have) < version_tuple(needed):
        raise RuntimeMissing(
            f"tflite-runtime {have} is older than the LiteRT runtime {needed} that {path.name} needs "
            "(its min_runtime_version): pip install ai-edge-litert"
        )


def check_tflite_file(path: Path) -> bytes:
    """Read a .tflite file, refusing anything that is not a TFLite flatbuffer before the runtime sees it."""
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    data = path.read_bytes()
    if len(data) < 16 or data[4:8] != TFLITE_IDENTIFIER:
        raise ModelFileError(f"{path} is not a TFLite model (no TFL3 flatbuffer identifier)")
    return data


class LiteRTModel(LoadedModel):
    runtime = "litert"
    runs_its_file = True

    def __init__(
        self,
        path,
        *,
        threads: int | None = None,
        delegates: Sequence = (),
        xnnpack: bool = True,
        xnnpack_latest: bool = False,
        device: str = "cpu",
        interpreter: str | None = None,
    ):
        super().__init__(path)
        module = self._module = interpreter_module(interpreter)
        content = check_tflite_file(self.path)
        check_runtime_supports(content, module, self.path)
        kwargs = _xnnpack_options(module, xnnpack, xnnpack_latest)
        self.device = device
        self.threads = threads
        try:
            with quiet_native_logs():
                self._interp = module.Interpreter(
                    model_content=content,
                    num_threads=threads,
                    experimental_delegates=list(delegates) or None,
                    **kwargs,
                )
                self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(f"LiteRT cannot load {self.path}: {first_line(exc)}") from exc
        self._refresh()
        self._declared = [_info(d) for d in self._in]  # as the file has them, whatever batch they are resized to

    def _refresh(self):
        self._in = self._interp.get_input_details()
        self._out = self._interp.get_output_details()
        self._in_idx = [d["index"] for d in self._in]
        self._out_idx = [d["index"] for d in self._out]

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._declared

    @property
    def outputs(self) -> list[TensorInfo]:
        return [_info(d) for d in self._out]

    @property
    def version(self) -> str:
        return runtime_version(self._module)

    def resize_batch(self, batch: int) -> None:
        if all(int(d["shape"][0]) == batch for d in self._in):
            return
        for d in self._in:
            shape = list(d["shape"])
            shape[0] = batch
            self._interp.resize_tensor_input(d["index"], shape)
        self._interp.allocate_tensors()
        self._refresh()

    def _enable_batches(self) -> bool:
        return True  # ``run`` resizes the input to each batch; a graph that cannot take it raises there

    def _disable_batches(self) -> None:
        """Back to the file's shapes (a resize that failed to allocate left the interpreter half resized)."""
        for detail, declared in zip(self._interp.get_input_details(), self._declared):
            self._interp.resize_tensor_input(detail["index"], [max(d, 1) for d in declared.shape])
        self._interp.allocate_tensors()
        self._refresh()

    def set_inputs(self, arrays):
        for index, array in zip(self._in_idx, arrays):
            self._interp.set_tensor(index, array)

    def invoke(self):
        self._interp.invoke()

    def get_outputs(self):
        return [self._interp.get_tensor(i) for i in self._out_idx]

    def ops(self) -> list[dict]:
        """The operators of the graph as LiteRT reports them (name, input and output tensor indices)."""
        return self._interp._get_ops_details()

    def tensors(self) -> list[dict]:
        return self._interp.get_tensor_details()

    def close(self):
        self._interp = None


def _xnnpack_options(module, xnnpack: bool, latest: bool) -> dict:
    """The Interpreter's arguments for XNNPACK, LiteRT's default CPU delegate: off (LiteRT's own kernels), or on with
    its latest features (operators and kernels newer releases enable by default) where this runtime has the flag."""
    import inspect

    accepted = inspect.signature(module.Interpreter.__init__).parameters
    kwargs = {}
    if not xnnpack and hasattr(module, "OpResolverType"):
        kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if xnnpack and latest:
        if "experimental_default_delegate_latest_features" not in accepted:
            raise EdgexError(f"{runtime_version(module)} has no flag for XNNPACK's latest features")
        kwargs["experimental_default_delegate_latest_features"] = True
    return kwargs


def _info(detail: dict) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    signature = detail.get("shape_signature")
    shape = signature if signature is not None and len(signature) else detail["shape"]
    return TensorInfo(
        name=detail["name"],
        shape=tuple(int(d) for d in shape),
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale),
        zero_point=int(zero_point),
    )


def graph_interpreter(path: str | Path):
    """An interpreter for inspecting a model's graph: no default delegates (XNNPACK would fold the ops into
    DELEGATE nodes), tensors allocated so that constants can be read."""
    module = interpreter_module()
    kwargs = {}
    if hasattr(module, "OpResolverType"):
        kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with quiet_native_logs():
        interp = module.Interpreter(model_content=check_tflite_file(Path(path)), **kwargs)
        interp.allocate_tensors()
    return interp


def constant_tensors(interp) -> set[int]:
    """Indices of the tensors stored in the file (weights, biases, shapes): op inputs no op produces."""
    ops = interp._get_ops_details()
    produced = {int(i) for op in ops for i in op["outputs"]}
    graph_inputs = {int(d["index"]) for d in interp.get_input_details()}
    return {int(i) for op in ops for i in op["inputs"] if i >= 0} - produced - graph_inputs


def load_delegate(library: str, options: dict | None = None):
    """Load an external delegate library, with a one-line error when it cannot be loaded."""
    import ctypes

    module = interpreter_module()
    try:
        # Checked first: LiteRT's Delegate raises from its __del__ when the library cannot be opened.
        ctypes.CDLL(library)
    except OSError as exc:
        raise EdgexError(f"cannot load delegate {library}: {first_line(exc)}") from exc
    try:
        with quiet_native_logs():
            return module.load_delegate(library, options or {})
    except (ValueError, OSError, RuntimeError) as exc:
        raise EdgexError(f"cannot load delegate {library}: {first_line(exc)}") from exc


def load(
    path,
    *,
    device: str = "cpu",
    threads: int | None = None,
    delegate_options: dict | None = None,
    xnnpack: bool = True,
    xnnpack_latest: bool = False,
    interpreter: str | None = None,
) -> LiteRTModel:
    """Load a .tflite file on the CPU (XNNPACK by default) or through an external delegate (``delegate:PATH``)."""
    delegates = []
    if device.startswith("delegate:"):
        library = device.split(":", 1)[1]
        if not library:
            raise EdgexError(
                "device 'delegate:' needs the delegate library path, e.g. delegate:/usr/lib/libvx_delegate.so"
            )
        delegates.append(load_delegate(library, delegate_options))
    elif device != "cpu":
        raise EdgexError(f"the LiteRT backend runs on 'cpu' or 'delegate:PATH', not {device!r}")
    return LiteRTModel(
        path,
        threads=threads,
        delegates=delegates,
        xnnpack=xnnpack,
        xnnpack_latest=xnnpack_latest,
        device=device,
        interpreter=interpreter,
    )
