"""ONNX Runtime backend with its execution providers (CPU always; CUDA, TensorRT, OpenVINO, CoreML, DirectML)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np

from devices.base import LoadedModel, TensorInfo
from devices.errors import DeviceNotFound, EdgexError, ModelFileError, RuntimeMissing, choice_error, first_line
from devices.onnx_external import check_external_data

# Device name prefix -> execution providers to ask for, most specific first.
PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "gpu": ["CUDAExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
    "openvino": ["OpenVINOExecutionProvider"],
    "coreml": ["CoreMLExecutionProvider"],
    "dml": ["DmlExecutionProvider"],
}
# The session options that change speed, by the names edgex uses (edgex tune searches them).
GRAPH_OPTIMIZATIONS = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
EXECUTION_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeMissing("onnxruntime is not installed: pip install 'edgex[runtime]'") from exc
    return onnxruntime


def runtime_version() -> str:
    try:
        return f"onnxruntime {importlib.metadata.version('onnxruntime')}"
    except importlib.metadata.PackageNotFoundError:
        for dist in ("onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"):
            try:
                return f"{dist} {importlib.metadata.version(dist)}"
            except importlib.metadata.PackageNotFoundError:
                continue
    return ""


def device_names() -> list[str]:
    """Device names ONNX Runtime can serve with the providers of the installed build."""
    try:
        available = set(ort().get_available_providers())
    except RuntimeMissing:
        return []
    return [name for name, providers in PROVIDERS.items() if providers[0] in available]


def providers_for(device: str) -> list:
    kind, _, index = device.partition(":")
    if kind not in PROVIDERS:
        raise EdgexError(
            f"ONNX Runtime cannot run on device {device!r}; choose one of: " + ", ".join(sorted(PROVIDERS))
        )
    if index and not index.isdigit():
        raise EdgexError(f"device index must be a number in {device!r}")
    available = ort().get_available_providers()
    wanted = PROVIDERS[kind]
    if wanted[0] not in available:
        raise DeviceNotFound(
            f"device {device!r} needs {wanted[0]}, which this onnxruntime build lacks "
            f"(available: {', '.join(available)}); install the matching onnxruntime package (e.g. onnxruntime-gpu)"
        )
    options = {"device_id": int(index)} if index and kind in ("gpu", "tensorrt", "dml") else {}
    chosen = [(p, options) if options else p for p in wanted if p in available]
    # Nodes a device provider cannot take run on the CPU, as ONNX Runtime does by default.
    return chosen if kind == "cpu" else [*chosen, "CPUExecutionProvider"]


class OnnxRuntimeModel(LoadedModel):
    runtime = "onnxruntime"
    runs_its_file = True

    def __init__(
        self,
        path,
        *,
        device: str = "cpu",
        threads: int | None = None,
        profile_prefix: str | None = None,
        optimized_model_path: str | None = None,
        graph_optimization: str = "all",
        execution_mode: str = "sequential",
    ):
        super().__init__(path)
        module = ort()
        if not self.path.is_file():
            raise ModelFileError(f"model file not found: {self.path}")
        self.runs_its_file = not check_external_data(self.path)  # weights elsewhere: the file alone says less
        options = _session_options(module, threads, graph_optimization, execution_mode)
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        if optimized_model_path:  # the graph after ONNX Runtime's fusions: what a profile's node names refer to
            options.optimized_model_filepath = optimized_model_path
        providers = providers_for(device)
        self._options, self._providers = options, providers
        try:
            session = module.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for every load failure
            raise ModelFileError(f"ONNX Runtime cannot load {self.path}: {first_line(exc, 300)}") from exc
        first = providers[0] if isinstance(providers[0], str) else providers[0][0]
        if first not in session.get_providers():
            raise DeviceNotFound(f"{first} failed to initialise for device {device!r}; ONNX Runtime fell back to CPU")
        self.device = device
        self.threads = threads
        self._use(session)
        self._single = session  # the file's own session, kept while a batched one is tried

    def _use(self, session) -> None:
        self._session = session
        self._in = session.get_inputs()
        self._out = session.get_outputs()
        self._bind_outputs()

    def _bind_outputs(self, batch: int | None = None) -> None:
        """A binding whose outputs ONNX Runtime allocates (it keeps their shape from one run to the next)."""
        self._binding = self._session.io_binding()
        self._bound_batch = batch
        for out in self._out:
            self._binding.bind_output(out.name)

    def resize_batch(self, batch: int) -> None:
        if batch != self._bound_batch:
            self._bind_outputs(batch)

    @property
    def _declared(self):
        """Inputs as the file declares them (a batched session reports a free batch)."""
        return self._single.get_inputs()

    def _enable_batches(self) -> bool:
        """A second session of the same graph with the batch dimension of its inputs and outputs left free (the
        file fixes it to 1); needs the ``onnx`` package, and weights inside the file."""
        try:
            import onnx
        except ImportError:
            return False
        model = onnx.load(str(self.path), load_external_data=False)
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
            return False
        for value in (*model.graph.input, *model.graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
        del model.graph.value_info[:]  # inferred shapes with the fixed batch; ONNX Runtime infers them again
        _reshapes_keep_batch(model, onnx.numpy_helper)
        options = ort().SessionOptions()
        options.intra_op_num_threads = self._options.intra_op_num_threads
        options.inter_op_num_threads = self._options.inter_op_num_threads
        options.graph_optimization_level = self._options.graph_optimization_level
        options.execution_mode = self._options.execution_mode
        options.log_severity_level = 4  # a graph that does not take the batch fails the probe, quietly
        self._use(ort().InferenceSession(model.SerializeToString(), options, providers=self._providers))
        return True

    def _disable_batches(self) -> None:
        self._use(self._single)

    @property
    def inputs(self) -> list[TensorInfo]:
        return [_info(i) for i in self._declared]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [_info(o) for o in self._out]

    @property
    def version(self) -> str:
        return runtime_version()

    @property
    def providers(self) -> list[str]:
        return self._session.get_providers()

    def set_inputs(self, arrays):
        for meta, array in zip(self._in, arrays):
            self._binding.bind_cpu_input(meta.name, np.ascontiguousarray(array))

    def invoke(self):
        self._session.run_with_iobinding(self._binding)

    def get_outputs(self):
        return self._binding.copy_outputs_to_cpu()

    def end_profiling(self) -> str:
        """Stop profiling; returns the path of the JSON trace ONNX Runtime wrote."""
        return self._session.end_profiling()

    def close(self):
        self._binding = None
        self._session = self._single = None


def _session_options(module, threads: int | None, graph_optimization: str, execution_mode: str):
    if graph_optimization not in GRAPH_OPTIMIZATIONS:
        raise choice_error("ONNX Runtime graph optimization", graph_optimization, GRAPH_OPTIMIZATIONS)
    if execution_mode not in EXECUTION_MODES:
        raise choice_error("ONNX Runtime execution mode", execution_mode, EXECUTION_MODES)
    options = module.SessionOptions()
    options.graph_optimization_level = getattr(module.GraphOptimizationLevel, GRAPH_OPTIMIZATIONS[graph_optimization])
    options.execution_mode = getattr(module.ExecutionMode, EXECUTION_MODES[execution_mode])
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def _reshapes_keep_batch(model, numpy_helper) -> None:
    """Reshape targets written for a batch of 1 (tf2onnx writes [1, C, 1, 1] around separable convolutions) copy
    the batch instead: ONNX reads 0 in a Reshape target as "this dimension of the input". The batch probe checks
    the result against one sample at a time."""
    batched = {i.name for i in model.graph.input}  # tensors that carry the batch: those computed from the input
    for node in model.graph.node:  # nodes are in topological order
        if any(name in batched for name in node.input):
            batched.update(node.output)
    # A target can change when every use of it is the target of a Reshape of batch-carrying data.
    uses: dict[str, set[bool]] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            fits = node.op_type == "Reshape" and i == 1 and node.input[0] in batched
            fits = fits and not any(a.name == "allowzero" and a.i for a in node.attribute)
            uses.setdefault(name, set()).add(fits)
    for target in model.graph.initializer:
        if uses.get(target.name) != {True}:
            continue
        shape = numpy_helper.to_array(target).copy()
        if shape.ndim == 1 and len(shape) > 1 and shape[0] == 1:
            shape[0] = 0
            target.CopyFrom(numpy_helper.from_array(shape, target.name))


def _info(meta) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in meta.shape)
    return TensorInfo(name=meta.name, shape=shape, dtype=_DTYPES.get(meta.type, meta.type))


def load(
    path,
    *,
    device: str = "cpu",
    threads: int | None = None,
    profile_prefix: str | None = None,
    graph_optimization: str = "all",
    execution_mode: str = "sequential",
):
    return OnnxRuntimeModel(
        Path(path),
        device=device,
        threads=threads,
        profile_prefix=profile_prefix,
        graph_optimization=graph_optimization,
        execution_mode=execution_mode,
    )
