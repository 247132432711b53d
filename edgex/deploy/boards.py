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


_TARGETS = (
    Target(name="rpi4", description="Raspberry Pi 4 (Cortex-A72, 64-bit OS)", machine="aarch64", cores=4, device="cpu"),
    Target(name="rpi5", description="Raspberry Pi 5 (Cortex-A76, 64-bit OS)", machine="aarch64", cores=4, device="cpu"),
    Target(
        name="coral-usb",
        description="Coral USB Accelerator on a Linux host",
        machine="aarch64",
        cores=4,
        device="edgetpu:usb",
        coral=True,
    ),
    Target(
        name="coral-devboard",
        description="Coral Dev Board (i.MX 8M, Edge TPU on PCIe)",
        machine="aarch64",
        cores=4,
        device="edgetpu:pci",
        coral=True,
    ),
    Target(name="generic-arm64", description="any 64-bit Arm Linux board", machine="aarch64", cores=None, device="cpu"),
    Target(name="generic-x86_64", description="any x86-64 Linux machine", machine="x86_64", cores=None, device="cpu"),
)
DEPLOY_TARGETS = {target.name: target for target in _TARGETS}


@dataclass(frozen=True)
class Bundle:
    path: str
    target: str
    model: str  # the model the runner uses, relative to the bundle
    files: dict
    notes: tuple[str, ...] = ()
