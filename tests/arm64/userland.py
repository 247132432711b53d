"""An emulated arm64 Debian 12 userland (the base of Raspberry Pi OS Bookworm, Python 3.11) to run bundles on.

No root, binfmt or mount: ``debootstrap --download-only`` fetches the packages of a minimal bookworm with python3,
``dpkg -x`` unpacks them into a folder, and ``qemu-aarch64-static -L ROOT`` runs its Python. aarch64 wheels go into
one folder per runtime (pip's --platform/--target), put on PYTHONPATH. The ``python`` script it writes runs that
Python under qemu with the board's CPU, and passes its own path as argv[0], so that a child process the emulated
Python starts (sys.executable) is emulated too.

    python tests/arm64/userland.py CACHE [RUNTIME ...]     e.g. ai-edge-litert==2.1.6 tflite-runtime==2.14.0

CACHE is reused when it holds a finished build (local reruns are quick); CI starts from an empty one. The Debian
mirror is the one this machine's apt is configured with (``apt_mirror``); none is written here.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

SUITE = "bookworm"
APT_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))
PYTHON = "python3.11"
# pip (23) does not widen manylinux_2_17 to older tags for foreign platforms: every glibc up to bookworm's 2.36.
PLATFORMS = ("manylinux2014_aarch64", *(f"manylinux_2_{minor}_aarch64" for minor in range(17, 37)))
# What each runtime needs beside it: tflite-runtime 2.14 was built against numpy 1.
RUNTIME_EXTRAS = {"tflite-runtime": ("numpy<2", "Pillow"), "ai-edge-litert": ("numpy", "Pillow")}
DONE = ".complete"  # written last: a folder without it is an interrupted build, started over


class UserlandError(Exception):
    """The userland cannot be built here; the message says what is missing or what failed."""


class NoMirror(UserlandError):
    """This machine's apt configuration names no Debian mirror to download the userland from."""


def _deb822_uris(text: str) -> list[str]:
    """URIs of the ``Types: deb`` stanzas of a deb822 ``.sources`` file that are enabled and not security ones."""
    uris = []
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith(("#", " ", "\t")):
                fields[key.strip().lower()] = value.strip()
        enabled = fields.get("enabled", "yes").lower() != "no"
        if enabled and "deb" in fields.get("types", "").split() and "-security" not in fields.get("suites", ""):
            uris += fields.get("uris", "").split()
    return uris


def _one_line_uris(text: str) -> list[str]:
    """URIs of the ``deb URI SUITE ...`` lines of a sources.list that are not security ones."""
    uris = []
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", " ", line.split("#")[0]).split()  # without its [option=value ...]
        if len(words) >= 3 and words[0] == "deb" and "-security" not in words[2]:
            uris.append(words[1])
    return uris


def apt_mirror(sources: tuple[Path, ...] = APT_SOURCES) -> str:
    """The first Debian mirror this machine's apt uses (deb822 ``*.sources``, then one-line ``*.list`` files)."""
    files = []
    for place in sources:
        files += sorted(place.glob("*.sources")) + sorted(place.glob("*.list")) if place.is_dir() else [place]
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        uris = _deb822_uris(text) if path.suffix == ".sources" else _one_line_uris(text)
        if uris:
            return uris[0].rstrip("/")
    names = ", ".join(str(place) for place in sources)
    raise NoMirror(f"no Debian mirror is configured in {names}: the arm64 userland has nowhere to download from")


@dataclass(frozen=True)
class Userland:
    root: Path  # the unpacked Debian tree
    python: Path  # script: the emulated Python 3.11, for the given CPU
    wheels: dict[str, Path] = field(default_factory=dict)  # requirement -> folder for PYTHONPATH

    def run(self, args: list[str], *, runtime: str | None, cwd: Path, timeout: float = 300, extra_path: tuple = ()):
        """Run the emulated Python with the wheels of one runtime (None: none) after ``extra_path``."""
        path = os.pathsep.join([*map(str, extra_path), *([str(self.wheels[runtime])] if runtime else [])])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_"))}
        return subprocess.run(
            [str(self.python), *args],
            cwd=cwd,
            env={**env, "PYTHONPATH": path},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _step(command: list[str], what: str, timeout: float, **kwargs) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        raise UserlandError(f"{what} timed out after {timeout:g} s") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise UserlandError(f"{what} failed: {lines[-1] if lines else f'exit code {done.returncode}'}")


def missing_tools() -> list[str]:
    """Debian packages this needs that are not installed (.ci/run installs them)."""
    return [
        package
        for tool, package in (("qemu-aarch64-static", "qemu-user-static"), ("debootstrap", "debootstrap"))
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
    ]


def build_root(folder: Path, timeout: float = 600) -> Path:
    """Debian bookworm arm64 with python3, unpacked (not installed: no maintainer scripts run)."""
    root = folder / "root"
    if (root / DONE).exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    mirror = apt_mirror()
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    command = [debootstrap, "--arch=arm64", "--variant=minbase", "--download-only"]
    command += ["--include=python3,libpython3.11", SUITE, str(root), mirror]
    _step(command, f"debootstrap (downloading {SUITE} arm64 from {mirror})", timeout)
    for deb in sorted((root / "var/cache/apt/archives").glob("*.deb")):
        _step(["dpkg-deb", "-x", str(deb), str(root)], f"unpacking {deb.name}", 120)
    if not (root / "usr/bin" / PYTHON).exists():
        raise UserlandError(f"{PYTHON} is missing from the unpacked {SUITE} tree")
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    # Debian compiles bytecode in maintainer scripts, which dpkg -x does not run: without it every emulated start
    # compiles the standard library again.
    _compile(root, [root / "usr/lib" / PYTHON], "/usr/lib/" + PYTHON)
    (root / DONE).write_text("")
    return root


def _compile(root: Path, folders: list[Path], strip_to: str | None = None) -> None:
    """Bytecode for folders, by a host Python 3.11 (same bytecode) when there is one, else by the emulated one."""
    host = sys.executable if sys.version_info[:2] == (3, 11) else shutil.which(PYTHON)
    command = [host] if host else _emulated(root, "max")
    for folder in folders:
        args = ["-m", "compileall", "-q", "-j", "0", str(folder)] + (["-d", strip_to] if strip_to else [])
        subprocess.run([*command, *args], capture_output=True, timeout=600)


def _emulated(root: Path, cpu: str) -> list[str]:
    qemu = shutil.which("qemu-aarch64-static")
    return [qemu, "-cpu", cpu, "-L", str(root), str(root / "usr/bin" / PYTHON)]


def write_python(folder: Path, root: Path, cpu: str) -> Path:
    """A script that runs the emulated Python on a given CPU (cortex-a72: a Raspberry Pi 4)."""
    script = folder / f"python-{cpu}"
    qemu = shutil.which("qemu-aarch64-static")
    script.write_text(f'#!/bin/sh\nexec {qemu} -0 "$0" -cpu {cpu} -L {root} {root}/usr/bin/{PYTHON} "$@"\n')
    script.chmod(0o755)
    return script


def fetch_wheels(folder: Path, requirement: str, timeout: float = 600) -> Path:
    """aarch64 CPython 3.11 wheels of one runtime and what it needs, in a folder of their own (not compiled yet)."""
    name = requirement.replace("==", "-").replace(">", "").replace("<", "").replace("=", "")
    target = folder / "wheels" / name
    if (target / DONE).exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    extras = RUNTIME_EXTRAS[requirement.split("=")[0].split("<")[0].split(">")[0]]
    command = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(target)]
    command += ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp"]
    command += [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    _step([*command, requirement, *extras], f"pip (aarch64 wheels of {requirement})", timeout)
    return target


def build(folder: str | Path, runtimes: list[str], cpu: str = "cortex-a72") -> Userland:
    """The userland and one wheel folder per runtime, in ``folder`` (reused when complete)."""
    missing = missing_tools()
    if missing:
        raise UserlandError(f"not installed: {', '.join(missing)} (apt-get install {' '.join(missing)})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:  # processes building one folder: the first builds, the rest reuse it
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_locked(folder, runtimes, cpu)


def _build_locked(folder: Path, runtimes: list[str], cpu: str) -> Userland:
    with ThreadPoolExecutor(max_workers=1 + len(runtimes)) as pool:  # downloads: mostly waiting on the network
        tree = pool.submit(build_root, folder)
        fetched = {runtime: pool.submit(fetch_wheels, folder, runtime) for runtime in runtimes}
        root = tree.result()
        wheels = {runtime: future.result() for runtime, future in fetched.items()}
    for path in wheels.values():
        if not (path / DONE).exists():
            _compile(root, [path])
            (path / DONE).write_text("")
    return Userland(root, write_python(folder, root, cpu), wheels)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    try:
        userland = build(sys.argv[1], sys.argv[2:])
    except UserlandError as exc:
        sys.exit(f"error: {exc}")
    print(f"{userland.python} -c 'import platform; print(platform.machine())'")
    for runtime, path in userland.wheels.items():
        print(f"{runtime}: PYTHONPATH={path}")
