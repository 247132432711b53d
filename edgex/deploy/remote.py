"""Benchmark and evaluation runs of a deploy bundle on devices over SSH (the system's ssh/scp, so ~/.ssh/config,
keys and agents just work): copy, verify, optionally set up, then run ``python -m devices`` there."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from devices.bundle import read_manifest, safe_extract
from devices.errors import EdgexError, first_line
from edgex.progress import Measured, Progress

if TYPE_CHECKING:
    from devices.bench import BenchResult
    from edgex.deploy.boards import Bundle

REPO = Path(__file__).resolve().parents[2]
q = shlex.quote


def read_manifest_of_archive(archive: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return read_manifest(safe_extract(archive, Path(tmp) / "bundle"))


@dataclass(frozen=True)
class HostResult:
    host: str
    ok: bool
    error: str = ""
    bench: BenchResult | None = None
    accuracy: dict = field(default_factory=dict)
    identity: dict = field(default_factory=dict)
    seconds: float = 0.0
    runtime: str = ""  # what runs the model there; after --setup, with what crashed first and the fallback installed

    def to_dict(self) -> dict:
        data = asdict(self)
        data["bench"] = self.bench.to_dict() if self.bench else None
        return data


@dataclass(frozen=True)
class SshOptions:
    config: str | None = None  # an ssh_config file (-F)
    options: tuple[str, ...] = ()  # extra -o KEY=VALUE
    connect_timeout: int = 10
    timeout: float = 600.0  # per remote step


def _ssh_base(host: str, opts: SshOptions, tool: str) -> tuple[list[str], str]:
    user_host, port = host, None
    if host.count(":") == 1 and host.rsplit(":", 1)[1].isdigit():
        user_host, port = host.rsplit(":", 1)
    cmd = [tool, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={opts.connect_timeout}"]
    if opts.config:
        cmd += ["-F", opts.config]
    for option in opts.options:
        cmd += ["-o", option]
    if port:
        cmd += ["-P" if tool == "scp" else "-p", port]
    return cmd, user_host


class _RemoteError(Exception):
    pass


def _classify(host: str, step: str, proc: subprocess.CompletedProcess) -> str:
    text = (proc.stderr or "") + (proc.stdout or "")
    last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), f"exit code {proc.returncode}")
    lowered = text.lower()
    if proc.returncode == 255 and any(
        s in lowered for s in ("permission denied", "authentication", "host key verification failed")
    ):
        return f"{host}: authentication failed ({last})"
    if proc.returncode == 255 and any(
        s in lowered
        for s in ("could not resolve", "connection refused", "no route", "timed out", "network is unreachable")
    ):
        return f"{host}: unreachable ({last})"
    return f"{host}: {step} failed ({last})"


def _run(cmd: list[str], host: str, step: str, timeout: float, stdin: bytes | None = None) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin)
    except subprocess.TimeoutExpired:
        raise _RemoteError(f"{host}: timed out after {timeout:g} s during {step}") from None
    except FileNotFoundError as exc:
        raise _RemoteError(f"{cmd[0]} not found: install the OpenSSH client") from exc
    if proc.returncode != 0:
        raise _RemoteError(_classify(host, step, proc))
    return proc.stdout


def run_on_host(
    host: str,
    archive: Path,
    *,
    remote_dir: str,
    setup: bool,
    bench_args: list[str] | None,
    evaluate: bool,
    opts: SshOptions,
    remote_python: str = "python3",
) -> HostResult:
    start = time.perf_counter()
    remote = _Remote(host, opts)
    base = remote_dir.rstrip("/")
    try:
        folder = _upload(remote, archive, base, remote_python)
        python = _make_venv(remote, base, folder, remote_python) if setup else remote_python
        # Verified by the bundle.py copied from this host, before any code of the bundle is imported; -B keeps
        # bytecode out of the bundle so that it stays verifiable.
        remote.run(f"{q(remote_python)} -B {q(base + '/bundle.py')} verify {q(folder)}", "verifying")
        run = f"cd {q(folder)} && {q(python)} -B -m devices"
        runtime = _set_up_runtime(remote, run, f"{base}/venv/bin/pip") if setup else ""
        identity, bench, accuracy = _measure(remote, run, bench_args, evaluate)
        return HostResult(
            host=host,
            ok=True,
            bench=bench,
            accuracy=accuracy,
            identity=identity,
            seconds=time.perf_counter() - start,
            runtime=runtime,
        )
    except _RemoteError as exc:
        return HostResult(host=host, ok=False, error=str(exc), seconds=time.perf_counter() - start)
    except (ValueError, KeyError) as exc:
        error = f"{host}: unexpected output from the device ({exc})"
        return HostResult(host=host, ok=False, error=error, seconds=time.perf_counter() - start)
    except Exception as exc:  # one host's failure must not stop the others: it goes into its row
        return HostResult(host=host, ok=False, error=f"{host}: {first_line(exc)}", seconds=time.perf_counter() - start)


@dataclass(frozen=True)
class _Remote:
    """One host's ssh and scp command lines; run() raises _RemoteError naming the step that failed."""

    host: str
    opts: SshOptions

    @property
    def ssh(self) -> list[str]:
        return _ssh_base(self.host, self.opts, "ssh")[0]

    @property
    def target(self) -> str:
        return _ssh_base(self.host, self.opts, "ssh")[1]

    def run(self, command: str, step: str) -> str:
        return _run([*self.ssh, self.target, command], self.host, step, self.opts.timeout)

    def copy(self, files: list[str], dest: str, step: str) -> str:
        scp, _ = _ssh_base(self.host, self.opts, "scp")
        return _run([*scp, *files, f"{self.target}:{dest}"], self.host, step, self.opts.timeout)


def _upload(remote: _Remote, archive: Path, base: str, remote_python: str) -> str:
    """Copy the archive and this host's bundle.py to base/ and unpack it there; the bundle's folder."""
    remote.run(f"mkdir -p {q(base)}", "connecting")
    remote.copy([str(archive), str(REPO / "devices" / "bundle.py")], f"{base}/", "copying")
    folder = f"{base}/bundle"
    remote.run(
        f"rm -rf {q(folder)} && {q(remote_python)} {q(base + '/bundle.py')} unpack "
        f"{q(base + '/' + archive.name)} {q(folder)}",
        "unpacking",
    )
    return folder


def _make_venv(remote: _Remote, base: str, folder: str, remote_python: str) -> str:
    """A venv at base/venv with the bundle's requirements; its python."""
    venv = f"{base}/venv"
    remote.run(
        f"{q(remote_python)} -m venv --system-site-packages {q(venv)} && {q(venv)}/bin/pip "
        f"install -q -r {q(folder + '/requirements.txt')}",
        "setting up",
    )
    return f"{venv}/bin/python"


def _measure(
    remote: _Remote, run: str, bench_args: list[str] | None, evaluate: bool
) -> tuple[dict, BenchResult | None, dict]:
    """The device's identity, then its benchmark (when bench_args) and accuracy (when evaluate)."""
    from devices.bench import results_from_json

    identity = json.loads(remote.run(f"{run} info --json", "identifying"))
    bench = None
    if bench_args is not None:
        output = remote.run(f"{run} bench --json " + " ".join(map(q, bench_args)), "benchmarking")
        (bench,) = results_from_json(json.loads(output))
        environment = identity["environment"]
        bench = bench.with_extra(host=remote.host, board=environment.get("board", ""), os=environment.get("os", ""))
    accuracy = json.loads(remote.run(f"{run} eval --json", "evaluating")) if evaluate else {}
    return identity, bench, accuracy


def _set_up_runtime(remote: _Remote, run: str, pip: str) -> str:
    """Load the model in a child process on the device (python -m devices check); when every installed runtime
    crashes or refuses it, install the fallback its requirements.txt names and check again. One line back."""

    def check() -> dict:
        # check --json exits non-zero when no runtime works; its JSON says why
        return json.loads(remote.run(f"{run} check --json || true", "checking the runtime"))

    report = check()
    installed = ""
    if not report["ok"] and report["fallback"]:
        failed = report["line"].split("; install the fallback")[0]
        remote.run(f"{q(pip)} install -q {report['fallback']}", "installing the fallback")
        installed = f"{failed}; installed the fallback {report['fallback']}; "
        report = check()
    if not report["ok"]:
        raise _RemoteError(f"{remote.host}: {installed}{report['line']}")
    chosen = next(a for a in report["attempts"] if a["ok"])
    return installed + (report["line"] or f"{chosen['version']} runs it")


def read_hosts(hosts: list[str], hosts_file: str | None) -> list[str]:
    found = list(hosts)
    if hosts_file:
        path = Path(hosts_file)
        if not path.is_file():
            raise EdgexError(f"hosts file not found: {path}")
        found += [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    found = [h for h in dict.fromkeys(found) if h]
    if not found:
        raise EdgexError("no hosts: pass --ssh USER@HOST (repeatable) or --hosts FILE")
    return found


def deploy_remote(
    bundle: Bundle,
    hosts: list[str],
    *,
    remote_dir: str = "edgex",
    setup: bool = False,
    bench: bool = True,
    evaluate: bool = False,
    runs: int = 50,
    min_seconds: float = 1.0,
    remote_python: str = "python3",
    opts: SshOptions = SshOptions(),
    progress: Progress | None = None,
) -> list[HostResult]:
    """Copy, verify, (set up,) benchmark and (evaluate) on every host in parallel; one result per host, each also
    given to ``progress`` as a ``Measured`` event in the order of ``hosts``."""
    if shutil.which("ssh") is None or shutil.which("scp") is None:
        raise EdgexError("ssh/scp not found: install the OpenSSH client")
    if evaluate and not read_manifest_of_archive(Path(bundle.path)).get("eval"):
        raise EdgexError("remote evaluation needs a bundle built with --eval-data")
    bench_args = ["--runs", str(runs), "--min-seconds", str(min_seconds)] if bench else None
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        futures = [
            pool.submit(
                run_on_host,
                host,
                Path(bundle.path),
                remote_dir=remote_dir,
                setup=setup,
                bench_args=bench_args,
                evaluate=evaluate,
                opts=opts,
                remote_python=remote_python,
            )
            for host in hosts
        ]
        results = []
        for future in futures:
            results.append(future.result())
            if progress is not None:
                progress(Measured(row=results[-1], index=len(results), total=len(hosts)))
    return results
