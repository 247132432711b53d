"""What machine this is: CPU, ISA features, board, governor, temperature. Reads /proc and /sys; no heavy imports."""

from __future__ import annotations

import functools
import glob
import os
import platform
import shutil
import subprocess
from pathlib import Path

# /proc/cpuinfo flag -> the feature name users know.
_X86_FEATURES = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512",
    "avx512_vnni": "VNNI",
    "avx_vnni": "VNNI",
    "avx512_bf16": "BF16",
    "amx_tile": "AMX",
    "amx_int8": "AMX-INT8",
    "amx_bf16": "AMX-BF16",
}
_ARM_FEATURES = {
    "neon": "NEON",
    "asimd": "NEON",
    "asimddp": "DOTPROD",
    "i8mm": "I8MM",
    "sve": "SVE",
    "asimdhp": "FP16",
    "bf16": "BF16",
}
RUNTIME_PACKAGES = (
    "ai-edge-litert",
    "tflite-runtime",
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorflow",
    "tensorflow-cpu",
    "tf-keras",
    "tensorflow-model-optimization",
    "onnx",
    "tf2onnx",
    "numpy",
)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").strip().strip("\x00")
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    for line in _read("/proc/cpuinfo").splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key not in info:
            info[key] = value.strip()
    return info


def cpu_model() -> str:
    info = _cpuinfo()
    for key in ("model name", "hardware", "processor", "cpu model"):
        if info.get(key) and not info[key].isdigit():
            return info[key]
    if info.get("cpu part"):  # ARM: no model name, but implementer and part
        return f"ARM implementer {info.get('cpu implementer', '?')} part {info['cpu part']}"
    return platform.processor() or platform.machine()


def cpu_features() -> list[str]:
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("features") or "").split())
    table = _ARM_FEATURES if platform.machine().lower() in ("aarch64", "arm64", "armv7l", "armv8l") else _X86_FEATURES
    if platform.machine().lower() in ("aarch64", "arm64"):
        flags.add("asimd")  # NEON is part of AArch64
    seen: list[str] = []
    for flag, name in table.items():
        if flag in flags and name not in seen:
            seen.append(name)
    return seen


def int8_dot_products_saturate() -> bool:
    """x86 without VNNI: int8 kernels multiply with VPMADDUBSW, whose int16 pair sums saturate with 8-bit weights."""
    is_x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")
    return is_x86 and "VNNI" not in cpu_features()


def cpu_count() -> int:
    return os.cpu_count() or 1


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return cpu_count()


def board_model() -> str:
    """Raspberry Pi and other device-tree boards name themselves here."""
    return _read("/proc/device-tree/model")


def governor() -> str:
    return _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def cpu_frequency_mhz() -> float | None:
    value = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    return int(value) / 1000 if value.isdigit() else None


def temperature_c() -> float | None:
    """The CPU temperature, from the first thermal zone that reads (cpu zones preferred)."""
    zones = sorted(glob.glob("/sys/class/thermal/thermal_zone*"))
    zones.sort(key=lambda z: 0 if "cpu" in _read(f"{z}/type").lower() else 1)
    for zone in zones:
        value = _read(f"{zone}/temp")
        if value.lstrip("-").isdigit():
            return int(value) / 1000
    return None


def throttling() -> str:
    """Raspberry Pi firmware's throttled flags (``vcgencmd get_throttled``) where available."""
    if not shutil.which("vcgencmd"):
        return ""
    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=3)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def os_name() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.platform()


def package_versions(names=RUNTIME_PACKAGES) -> dict[str, str]:
    import importlib.metadata  # 35 ms: only when versions are asked for, not for `edgex --help`

    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def environment() -> dict:
    """The facts a benchmark result is tagged with."""
    env = {
        "hostname": platform.node(),
        "machine": platform.machine(),
        "os": os_name(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cores": cpu_count(),
        "usable_cores": usable_cores(),
        "cpu_features": cpu_features(),
        "board": board_model(),
        "governor": governor(),
        "cpu_mhz": cpu_frequency_mhz(),
        "temperature_c": temperature_c(),
        "throttled": throttling(),
    }
    return {k: v for k, v in env.items() if v not in ("", None, [])}


def versions() -> dict[str, str]:
    """Python and the versions of the packages edgex works with (recorded in every artifact's metadata)."""
    return {"python": platform.python_version(), **package_versions()}
