"""Latency measured on a board over SSH, by the runner that ships in every bundle (``python -m devices``): the
runner is copied once, each artifact once (by content), and each A/B runs there as
``python -B -m devices bench --model A --interleave B``. Accuracy is measured on the host: the same file through
the same runtime. A connection that fails is the device gone: the search stops with what it finished."""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from devices.bench import results_from_json
from devices.errors import DeviceNotFound
from devices.files import atomic_path, sha256_file
from devices.interleave import LatencyRatio
from edgex.deploy.remote import SshOptions, _Remote, _RemoteError, _upload, q
from edgex.tune.latency import AB_BENCH, Placed
from edgex.tune.search import DeviceLost


class SshDevice:
    """A board reached with the system's ssh and scp (~/.ssh/config, keys, agent)."""

    def __init__(self, host: str, *, opts: SshOptions = SshOptions(), remote_dir="edgex-tune", python="python3"):
        self.host, self.opts, self.python, self.base = host, opts, python, remote_dir.rstrip("/")
        self.name = f"ssh:{host}"
        self.remote = _Remote(host, opts)
        self._copied: dict[str, str] = {}
        try:
            self.folder = self._call(lambda: _upload(self.remote, _runner_archive(), self.base, python))
            self.identity = json.loads(self._call(lambda: self.remote.run(f"{self._run} info --json", "identifying")))
        except DeviceLost as exc:
            raise DeviceNotFound(f"--ssh {host}: {exc}") from exc
        self.cores = int(self.identity["environment"].get("cores") or 1)

    @property
    def _run(self) -> str:
        return f"cd {q(self.folder)} && {q(self.python)} -B -m devices"

    def _call(self, step):
        try:
            return step()
        except _RemoteError as exc:
            raise DeviceLost(str(exc)) from exc

    def _copy(self, path: Path) -> str:
        """The artifact's path on the board (relative to the runner), copied there once."""
        digest = sha256_file(path)
        if digest not in self._copied:
            name = f"{digest[:12]}-{path.name}"
            self._call(lambda: self.remote.run(f"mkdir -p {q(self.base + '/models')}", "copying"))
            self._call(lambda: self.remote.copy([str(path)], f"{self.base}/models/{name}", "copying"))
            self._copied[digest] = f"../models/{name}"
        return self._copied[digest]

    def ab(self, incumbent: Placed, candidate: Placed, threads: int) -> LatencyRatio:
        first, second = self._copy(incumbent.path), self._copy(candidate.path)
        config = AB_BENCH
        command = (
            f"{self._run} bench --json --no-check --threads {int(threads)} --model {q(first)} "
            f"--interleave {q(second)} --options {q(json.dumps(incumbent.load_options))} "
            f"--interleave-options {q(json.dumps(candidate.load_options))} --warmup {config.warmup} "
            f"--runs {config.runs} --min-seconds {config.min_seconds} --max-seconds {config.max_seconds}"
        )
        a, b = results_from_json(json.loads(self._call(lambda: self.remote.run(command, "benchmarking"))))
        return LatencyRatio.from_results(a, b)

    def alone(self, placed: Placed, threads: int):
        return self.ab(placed, placed, threads).b

    def threads_sweep(self, placed: Placed, threads: tuple[int, ...]) -> dict[int, float]:
        """The p50 at each thread count, measured one count after another (the runner interleaves two models at
        one thread count)."""
        return {count: self.alone(placed, count).latency.p50 for count in threads}


def _runner_archive() -> Path:
    """The runner: the devices package and a manifest, packed as a bundle (verified on the board when unpacked)."""
    from devices.bundle import write_manifest
    from edgex.deploy.bundle import REPO

    folder = Path(tempfile.mkdtemp(prefix="edgex-tune-runner-"))
    root = folder / "runner"
    shutil.copytree(REPO / "devices", root / "devices", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    write_manifest(root, {"target": "tune", "model": "", "defaults": {"device": "cpu", "threads": None}})
    archive = folder / "runner.tar.gz"
    with atomic_path(archive) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=path.relative_to(root).as_posix(), recursive=False)
    return archive
