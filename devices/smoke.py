"""Load and run a model once in a child process before the runner does. A runtime that crashes (a signal, not a
Python error) takes down the child, not the runner, which then tries the next runtime installed, and says in one line
which version crashed with which signal.

    python -m devices.smoke MODEL [--runtime R] [--interpreter M] [--device D] [--threads N]   (the child)
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import importlib.util
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from devices.errors import EdgexError, RuntimeMissing, first_line

EXIT_ERROR = 2  # the model or the input is at fault: another runtime would fail the same way
EXIT_UNUSABLE = 3  # this runtime cannot be imported here, or is too old for the model: the next one may do
FALLBACK_PREFIX = "# fallback:"  # the requirements.txt line naming what to install when every runtime fails


class RuntimeCrashed(EdgexError):
    """No installed runtime could load and run the model; the message names each one and what to install."""


@dataclass(frozen=True)
class Attempt:
    runtime: str  # the devices runtime: litert, onnxruntime, tensorflow
    interpreter: str  # for litert, the package that provides it: ai_edge_litert or tflite_runtime
    version: str  # "ai-edge-litert 2.3.0"
    ok: bool
    signal: str = ""  # the signal that killed the child, e.g. SIGSEGV
    error: str = ""  # the child's one-line error otherwise
    next_may_work: bool = False  # the failure is this runtime's (crash, hang, too old, not importable), not the model's

    def describe(self, model: str) -> str:
        if self.ok:
            return f"running it with {self.version}"
        if self.signal:
            return f"{self.version} crashed ({self.signal}) loading {model}"
        name = self.version or self.interpreter or self.runtime
        return self.error if self.error.startswith(name.split()[0]) else f"{name}: {self.error}"


@dataclass(frozen=True)
class SmokeReport:
    model: str
    attempts: tuple[Attempt, ...]
    fallback: str = ""  # pip arguments that requirements.txt names as the fallback

    @property
    def chosen(self) -> Attempt | None:
        return next((a for a in self.attempts if a.ok), None)

    def line(self) -> str:
        """One line: empty when the first runtime worked; what failed and what runs the model instead otherwise."""
        failed = [a for a in self.attempts if not a.ok]
        if not failed:
            return ""
        if self.chosen is None and len(self.attempts) == 1 and not failed[0].next_may_work:
            return failed[0].error
        parts = [a.describe(self.model) for a in self.attempts]
        if self.chosen is None:
            parts.append(
                f"install the fallback requirements.txt names: pip install {self.fallback}"
                if self.fallback
                else "no other runtime is installed that runs it"
            )
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.chosen is not None, "line": self.line()}


def candidates(model: Path, device: str = "cpu") -> list[tuple[str, str, str]]:
    """(runtime, interpreter, version) of every installed runtime that could run this model, in the order tried."""
    from devices.litert import INTERPRETERS
    from devices.registry import detect_runtime

    runtime = detect_runtime(model, device)
    if runtime != "litert":
        return [(runtime, "", _version(runtime))]
    found = [("litert", module, _version(dist)) for module, dist in INTERPRETERS if importlib.util.find_spec(module)]
    if not found:
        raise RuntimeMissing(
            "no LiteRT runtime is installed: pip install -r requirements.txt (ai-edge-litert, or tflite-runtime)"
        )
    return found


def _version(dist: str) -> str:
    try:
        return f"{dist} {importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return dist


def requirements_fallback(bundle: Path) -> str:
    """The pip arguments of the ``# fallback:`` line of a bundle's requirements.txt ("" when there is none)."""
    path = Path(bundle) / "requirements.txt"
    if not path.is_file():
        return ""
    for line in path.read_text().splitlines():
        if line.startswith(FALLBACK_PREFIX):
            return line[len(FALLBACK_PREFIX) :].strip()
    return ""


def try_runtime(
    model: Path, runtime: str, interpreter: str, version: str, *, device: str, threads: int | None, timeout: float
) -> Attempt:
    """Load and run the model once in a child process with one runtime."""
    package_parent = str(Path(__file__).resolve().parents[1])
    command = [sys.executable, "-B", "-m", "devices.smoke", str(model), "--runtime", runtime, "--device", device]
    command += ["--interpreter", interpreter] if interpreter else []
    command += ["--threads", str(threads)] if threads else []
    path = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p)
    tried = functools.partial(Attempt, runtime=runtime, interpreter=interpreter, version=version)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": path}
        )
    except subprocess.TimeoutExpired:
        error = f"timed out after {timeout:g} s loading {model.name}"
        return tried(ok=False, error=error, next_may_work=True)
    if done.returncode == 0:
        return tried(ok=True)
    if done.returncode < 0:
        return tried(ok=False, signal=_signal_name(-done.returncode), next_may_work=True)
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    error = lines[-1].removeprefix("error: ") if lines else f"exit code {done.returncode}"
    return tried(ok=False, error=error, next_may_work=done.returncode == EXIT_UNUSABLE)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


_REPORTS: dict[tuple, SmokeReport] = {}  # one child per model and settings in a process that runs several commands


def smoke_test(
    model: Path, *, device: str = "cpu", threads: int | None = None, fallback: str = "", timeout: float = 600.0
) -> SmokeReport:
    """Try the installed runtimes in order until one loads and runs the model; stop at an error of the model."""
    key = (str(model), device, threads, fallback)
    if key in _REPORTS:
        return _REPORTS[key]
    attempts = []
    for runtime, interpreter, version in candidates(model, device):
        attempt = try_runtime(model, runtime, interpreter, version, device=device, threads=threads, timeout=timeout)
        attempts.append(attempt)
        if not attempt.next_may_work:
            break
    report = _REPORTS[key] = SmokeReport(Path(model).name, tuple(attempts), fallback)
    return report


def checked_runtime(model: Path, *, device: str, threads: int | None, bundle: Path) -> Attempt:
    """The runtime that runs the model here, after a smoke test; a fallback is reported on stderr in one line."""
    report = smoke_test(model, device=device, threads=threads, fallback=requirements_fallback(bundle))
    if report.chosen is None:
        raise RuntimeCrashed(report.line())
    if report.line():
        print(f"warning: {report.line()}", file=sys.stderr)
    return report.chosen


def _child(argv: list[str] | None = None) -> int:
    import devices

    parser = argparse.ArgumentParser(prog="python -m devices.smoke")
    parser.add_argument("model")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--interpreter")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    options = {"interpreter": args.interpreter} if args.interpreter else {}
    try:
        model = devices.load_model(
            args.model, runtime=args.runtime, device=args.device, threads=args.threads, **options
        )
        model.run(model.sample_inputs())
    except RuntimeMissing as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return EXIT_UNUSABLE
    except EdgexError as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(_child())
