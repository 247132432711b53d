"""The boards a bundle can target (each sets the runner's defaults), and what a built bundle is."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    machine: str  # uname -m of the board
    cores: int | None  # threads by default (None: whatever the device has)
    device: str  # the --device the runner uses by default
    coral: bool = False


DEPLOY_TARGETS = {
    "rpi4": Target("rpi4", "Raspberry Pi 4 (Cortex-A72, 64-bit OS)", "aarch64", 4, "cpu"),
    "rpi5": Target("rpi5", "Raspberry Pi 5 (Cortex-A76, 64-bit OS)", "aarch64", 4, "cpu"),
    "coral-usb": Target("coral-usb", "Coral USB Accelerator on a Linux host", "aarch64", 4, "edgetpu:usb", True),
    "coral-devboard": Target(
        "coral-devboard", "Coral Dev Board (i.MX 8M, Edge TPU on PCIe)", "aarch64", 4, "edgetpu:pci", True
    ),
    "generic-arm64": Target("generic-arm64", "any 64-bit Arm Linux board", "aarch64", None, "cpu"),
    "generic-x86_64": Target("generic-x86_64", "any x86-64 Linux machine", "x86_64", None, "cpu"),
}


@dataclass(frozen=True)
class Bundle:
    path: str
    target: str
    model: str  # the model the runner uses, relative to the bundle
    files: dict
    notes: tuple[str, ...] = ()
