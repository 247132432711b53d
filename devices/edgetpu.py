"""Edge TPU (Coral) backend: LiteRT with the ``libedgetpu`` delegate, USB or PCIe devices."""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import platform
from pathlib import Path

from devices.errors import DeviceNotFound, EdgexError, ModelFileError
from devices.litert import LiteRTModel, check_tflite_file, load_delegate

EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
EDGETPU_CUSTOM_OP = b"edgetpu-custom-op"
INSTALL_HINT = (
    "install the Edge TPU runtime: sudo apt-get install libedgetpu1-std "
    "(Coral's apt repository: https://coral.ai/software/#debian-packages)"
)
# USB ids: 1a6e:089a before the firmware is loaded, 18d1:9302 after.
_USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}


def library_name() -> str:
    return EDGETPU_LIBRARY.get(platform.system(), "libedgetpu.so.1")


def find_library() -> str | None:
    """The loadable libedgetpu, or None."""
    name = library_name()
    try:
        ctypes.CDLL(name)
        return name
    except OSError:
        found = ctypes.util.find_library("edgetpu")
        return found


class _Device(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("path", ctypes.c_char_p)]


def list_edge_tpus() -> list[dict]:
    """Edge TPUs on this machine: through libedgetpu when it is installed, else what USB/PCIe enumeration shows."""
    library = find_library()
    if library:
        try:
            lib = ctypes.CDLL(library)
            lib.edgetpu_list_devices.restype = ctypes.POINTER(_Device)
            lib.edgetpu_list_devices.argtypes = [ctypes.POINTER(ctypes.c_size_t)]
            count = ctypes.c_size_t(0)
            devices = lib.edgetpu_list_devices(ctypes.byref(count))
            found = []
            counters = {"pci": 0, "usb": 0}
            for i in range(count.value):
                kind = "pci" if devices[i].type == 0 else "usb"
                found.append(
                    {
                        "name": f"edgetpu:{kind}:{counters[kind]}",
                        "type": kind,
                        "path": (devices[i].path or b"").decode(),
                    }
                )
                counters[kind] += 1
            if count.value:
                lib.edgetpu_free_devices(devices)
            return found
        except (OSError, AttributeError):
            pass
    found = []
    for i, path in enumerate(sorted(glob.glob("/dev/apex_*"))):
        found.append({"name": f"edgetpu:pci:{i}", "type": "pci", "path": path})
    usb = 0
    for dev in sorted(glob.glob("/sys/bus/usb/devices/*")):
        ids = (_read(os.path.join(dev, "idVendor")), _read(os.path.join(dev, "idProduct")))
        if ids in _USB_IDS:
            found.append({"name": f"edgetpu:usb:{usb}", "type": "usb", "path": dev})
            usb += 1
    return found


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def is_compiled(data: bytes) -> bool:
    """Whether a TFLite model holds an Edge TPU custom op (i.e. went through edgetpu_compiler)."""
    return EDGETPU_CUSTOM_OP in data


def delegate_options(device: str) -> dict:
    """``edgetpu`` / ``edgetpu:usb`` / ``edgetpu:usb:0`` / ``edgetpu:pci:0`` -> libedgetpu delegate options."""
    parts = device.split(":")
    if parts[0] != "edgetpu" or len(parts) > 3 or (len(parts) > 1 and parts[1] not in ("usb", "pci")):
        raise EdgexError(
            f"unknown Edge TPU device {device!r}; use edgetpu, edgetpu:usb, edgetpu:usb:N or edgetpu:pci:N"
        )
    if len(parts) == 3 and not parts[2].isdigit():
        raise EdgexError(f"Edge TPU index must be a number in {device!r}")
    return {"device": ":".join(parts[1:])} if len(parts) > 1 else {}


def load(path, *, device: str = "edgetpu", threads: int | None = None, delegate_options_extra: dict | None = None):
    """Load an Edge TPU-compiled .tflite through libedgetpu on the given Edge TPU."""
    options = delegate_options(device)
    data = check_tflite_file(Path(path))
    if not is_compiled(data):
        raise ModelFileError(
            f"{path} is not compiled for the Edge TPU: make a full-integer model with "
            f"`edgex convert MODEL --to edgetpu`, then compile it with `edgetpu_compiler` "
            f"(an uncompiled model would run entirely on the CPU)"
        )
    library = find_library()
    if not library:
        raise DeviceNotFound(f"{library_name()} not found: {INSTALL_HINT}")
    wanted = options.get("device", "")
    present = list_edge_tpus()
    if not any(d["name"].startswith(f"edgetpu:{wanted}") or not wanted for d in present):
        names = ", ".join(d["name"] for d in present) or "none"
        raise DeviceNotFound(f"no Edge TPU matches {device!r} (found: {names})")
    options.update(delegate_options_extra or {})
    delegate = load_delegate(library, options)
    return LiteRTModel(path, threads=threads, delegates=[delegate], device=device)
