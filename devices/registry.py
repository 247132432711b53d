"""One table of runtimes, device names, and the loader that picks a backend for a model file and a device."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from devices.errors import DeviceNotFound, EdgexError, ModelFileError, choice_error
from devices.files import read_whole


@dataclass(frozen=True)
class Runtime:
    name: str
    module: str  # the backend module, imported only when used
    formats: tuple[str, ...]  # file suffixes it runs ("saved_model" for SavedModel folders)
    devices: tuple[str, ...]  # device kinds it can target
    extra: str  # pip extra that installs it


RUNTIMES: dict[str, Runtime] = {
    "litert": Runtime(
        name="litert",
        module="devices.litert",
        formats=(".tflite",),
        devices=("cpu", "delegate", "edgetpu"),
        extra="runtime",
    ),
    "onnxruntime": Runtime(
        name="onnxruntime",
        module="devices.onnxruntime",
        formats=(".onnx",),
        devices=("cpu", "gpu", "tensorrt", "openvino", "coreml", "dml"),
        extra="runtime",
    ),
    "tensorflow": Runtime(
        name="tensorflow",
        module="devices.tensorflow",
        formats=(".keras", ".h5", ".hdf5", "saved_model"),
        devices=("cpu", "gpu"),
        extra="train",
    ),
}
DEVICE_KINDS = ("cpu", "gpu", "edgetpu", "delegate", "tensorrt", "openvino", "coreml", "dml")
# How each kind is named on --device (what parse_device takes).
DEVICE_NAMES = (
    "cpu",
    "gpu[:N]",
    "edgetpu[:usb|pci[:N]]",
    "delegate:PATH",
    "tensorrt[:N]",
    "openvino",
    "coreml",
    "dml[:N]",
)


@dataclass(frozen=True)
class DeviceInfo:
    name: str  # the stable name used by --device
    kind: str
    runtimes: tuple[str, ...]
    description: str = ""
    details: dict = field(default_factory=dict)


def parse_device(name: str) -> tuple[str, str]:
    """``"edgetpu:usb:0"`` -> ``("edgetpu", "usb:0")``; raises for unknown kinds."""
    kind, _, rest = (name or "").strip().partition(":")
    if kind not in DEVICE_KINDS:
        raise choice_error("device", name, DEVICE_NAMES)
    if kind == "delegate" and not rest:
        raise EdgexError("device 'delegate:' needs a library path, e.g. delegate:/usr/lib/libvx_delegate.so")
    return kind, rest


def model_format(path: str | os.PathLike) -> str:
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "saved_model"
        raise ModelFileError(f"{path} is a folder but not a SavedModel (no saved_model.pb)")
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    suffix = path.suffix.lower()
    known = sorted({s for r in RUNTIMES.values() for s in r.formats if s.startswith(".")})
    if suffix not in known:
        raise ModelFileError(
            f"{path}: unknown model format {suffix or '(no suffix)'!r}; edgex runs {', '.join(known)} "
            "files and SavedModel folders"
        )
    return suffix


def detect_runtime(path: str | os.PathLike, device: str = "cpu") -> str:
    """The runtime that runs this file on this device."""
    fmt = model_format(path)
    kind, _ = parse_device(device)
    for runtime in RUNTIMES.values():
        if fmt in runtime.formats and kind in runtime.devices:
            return runtime.name
    runs = [r.name for r in RUNTIMES.values() if fmt in r.formats]
    raise EdgexError(
        f"no runtime runs {fmt} models on device {device!r} ({', '.join(runs)} runs them on: "
        + ", ".join(k for r in runs for k in RUNTIMES[r].devices)
        + ")"
    )


def load_model(
    path,
    *,
    runtime: str = "auto",
    device: str = "cpu",
    threads: int | None = None,
    delegate_options: dict | None = None,
    **options,
):
    """Load a model file on a device; ``runtime="auto"`` picks the runtime from the file format and device."""
    kind, _ = parse_device(device)
    if runtime == "auto":
        runtime = detect_runtime(path, device)
    elif runtime not in RUNTIMES:
        raise choice_error("runtime", runtime, ["auto", *RUNTIMES])
    spec = RUNTIMES[runtime]
    fmt = model_format(path)
    if fmt not in spec.formats:
        raise EdgexError(f"runtime {runtime!r} cannot run {fmt} models; it runs: {', '.join(spec.formats)}")
    if kind not in spec.devices:
        raise EdgexError(f"runtime {runtime!r} cannot use device {device!r}; it supports: {', '.join(spec.devices)}")
    try:
        with read_whole(path):  # a file rewritten during the load: FileChanged
            if kind == "edgetpu":
                from devices import edgetpu

                return edgetpu.load(path, device=device, threads=threads, delegate_options_extra=delegate_options)
            backend = importlib.import_module(spec.module)
            if runtime == "litert":
                return backend.load(path, device=device, threads=threads, delegate_options=delegate_options, **options)
            return backend.load(path, device=device, threads=threads, **options)
    except DeviceNotFound as exc:
        names = ", ".join(d.name for d in available_devices(probe_tensorflow=False))
        raise DeviceNotFound(f"{exc} (available devices: {names})") from exc


def available_devices(probe_tensorflow: bool = True) -> list[DeviceInfo]:
    """Every device this machine can run models on, each with its stable ``--device`` name."""
    from devices import edgetpu, onnxruntime, sysinfo

    found = [
        DeviceInfo(
            name="cpu",
            kind="cpu",
            runtimes=tuple(r for r in RUNTIMES if _installed(r)),
            description=f"{sysinfo.cpu_model()} ({sysinfo.cpu_count()} cores)",
            details={"features": sysinfo.cpu_features()},
        )
    ]
    gpus: dict[str, list[str]] = {}
    if probe_tensorflow and _installed("tensorflow"):
        from devices import tensorflow

        for name in tensorflow.gpu_names():
            gpus.setdefault(name, []).append("tensorflow")
    for kind in onnxruntime.device_names():
        if kind == "cpu":
            continue
        name = f"{kind}:0" if kind in ("gpu", "tensorrt", "dml") else kind
        gpus.setdefault(name, []).append("onnxruntime")
    for name, runtimes in gpus.items():
        found.append(DeviceInfo(name=name, kind=name.split(":")[0], runtimes=tuple(runtimes)))
    library = edgetpu.find_library()
    for tpu in edgetpu.list_edge_tpus():
        found.append(
            DeviceInfo(
                name=tpu["name"],
                kind="edgetpu",
                runtimes=("litert",),
                description="Coral Edge TPU" + ("" if library else " (libedgetpu not installed)"),
                details={"path": tpu["path"], "library": library or ""},
            )
        )
    for library_path in _known_delegates():
        found.append(
            DeviceInfo(
                name=f"delegate:{library_path}",
                kind="delegate",
                runtimes=("litert",),
                description="external LiteRT delegate",
            )
        )
    return found


# Delegate libraries that vendors install in the usual library folders (NPU SDKs of i.MX, Arm NN, ...).
_DELEGATE_NAMES = (
    "libvx_delegate.so",
    "libethosu_delegate.so",
    "libarmnnDelegate.so",
    "libneuron_delegate.so",
    "libQnnTFLiteDelegate.so",
    "libtensorflowlite_gpu_delegate.so",
)
_LIBRARY_DIRS = (
    "/usr/lib",
    "/usr/local/lib",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/arm-linux-gnueabihf",
    "/usr/lib/x86_64-linux-gnu",
)


def _known_delegates() -> list[str]:
    extra = [p for p in os.environ.get("EDGEX_DELEGATE_PATH", "").split(os.pathsep) if p]
    found = [p for p in extra if Path(p).is_file()]
    for folder in _LIBRARY_DIRS:
        for name in _DELEGATE_NAMES:
            candidate = Path(folder) / name
            if candidate.is_file():
                found.append(str(candidate))
    return found


def _installed(runtime: str) -> bool:
    import importlib.util

    modules = {
        "litert": ("ai_edge_litert", "tflite_runtime"),
        "onnxruntime": ("onnxruntime",),
        "tensorflow": ("tensorflow",),
    }[runtime]
    return any(importlib.util.find_spec(m) is not None for m in modules)
