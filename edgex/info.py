"""What edgex runs with: package versions, Python, CPU and its ISA features, GPUs and execution providers."""

from __future__ import annotations

import platform

from devices import sysinfo

PACKAGES = (
    "edgex",
    "tensorflow",
    "tensorflow-cpu",
    "tf-keras",
    "tensorflow-model-optimization",
    "ai-edge-litert",
    "tflite-runtime",
    "onnx",
    "tf2onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "numpy",
    "typer",
    "rich",
)


def system_info(probe_gpus: bool = True) -> dict:
    """Versions and hardware facts; ``probe_gpus`` imports TensorFlow to list the GPUs it sees."""
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": sysinfo.package_versions(PACKAGES),
        "cpu": {
            "model": sysinfo.cpu_model(),
            "machine": platform.machine(),
            "cores": sysinfo.cpu_count(),
            "usable_cores": sysinfo.usable_cores(),
            "features": sysinfo.cpu_features(),
        },
        "onednn": _onednn(imported=probe_gpus),
        "board": sysinfo.board_model() or None,
        "onnxruntime_providers": _ort_providers(),
        "tensorflow_gpus": _tf_gpus() if probe_gpus else None,
    }
    return info


def _onednn(imported: bool) -> dict:
    """TensorFlow's oneDNN CPU kernels, on or off and why, and the path grouped convolutions train on. Without
    importing TensorFlow (``--no-gpus``), what edgex sets before it is imported."""
    from devices.errors import RuntimeMissing
    from devices.tfkeras import grouped_convolution_path, onednn_enabled, onednn_setting

    if imported:
        try:
            path = grouped_convolution_path()
            return {"on": onednn_enabled(), "reason": onednn_setting().reason, "grouped": path.to_dict()}
        except RuntimeMissing:
            pass
    setting = onednn_setting()
    return {"on": setting.on, "reason": setting.reason, "grouped": None}


def _ort_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def _tf_gpus() -> list[str]:
    from devices.errors import RuntimeMissing

    try:
        from devices.tfkeras import tensorflow

        tf = tensorflow()
    except RuntimeMissing:
        return []
    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        gpus.append(f"{device.name} {details.get('device_name', '')}".strip())
    return gpus
