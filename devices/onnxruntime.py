"""ONNX Runtime backend with its execution providers (CPU always; CUDA, TensorRT, OpenVINO, CoreML, DirectML)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np

from devices.base import LoadedModel, TensorInfo
from devices.errors import DeviceNotFound, EdgexError, ModelFileError, RuntimeMissing
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

    def __init__(
        self,
        path,
        *,
        device: str = "cpu",
        threads: int | None = None,
        profile_prefix: str | None = None,
        optimized_model_path: str | None = None,
    ):
        super().__init__(path)
        module = ort()
        if not self.path.is_file():
            raise ModelFileError(f"model file not found: {self.path}")
        check_external_data(self.path)
        options = module.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        if optimized_model_path:  # the graph after ONNX Runtime's fusions: what a profile's node names refer to
            options.optimized_model_filepath = optimized_model_path
        providers = providers_for(device)
        try:
            self._session = module.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for every load failure
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelFileError(f"ONNX Runtime cannot load {self.path}: {line[:300]}") from exc
        first = providers[0] if isinstance(providers[0], str) else providers[0][0]
        if first not in self._session.get_providers():
            raise DeviceNotFound(f"{first} failed to initialise for device {device!r}; ONNX Runtime fell back to CPU")
        self.device = device
        self.threads = threads
        self._in = self._session.get_inputs()
        self._out = self._session.get_outputs()
        self._binding = self._session.io_binding()
        for out in self._out:
            self._binding.bind_output(out.name)

    @property
    def inputs(self) -> list[TensorInfo]:
        return [_info(i) for i in self._in]

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
        self._session = None


def _info(meta) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in meta.shape)
    return TensorInfo(name=meta.name, shape=shape, dtype=_DTYPES.get(meta.type, meta.type))


def load(path, *, device: str = "cpu", threads: int | None = None, profile_prefix: str | None = None):
    return OnnxRuntimeModel(Path(path), device=device, threads=threads, profile_prefix=profile_prefix)
