"""Shared fixtures: tiny models and data built once per session, and a CLI runner that returns exit codes."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["EDGEX_CACHE_DIR"] = tempfile.mkdtemp(prefix="edgex-test-cache-")  # never the user's cache
if os.environ.get("PYTEST_XDIST_WORKER"):  # one worker per core: TensorFlow's pool of a core each, not of them all
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _needs_userland(item) -> bool:
    return "userland" in getattr(item, "fixturenames", ())


# Session fixtures that take a minute: every test using one runs in the same pytest-xdist worker.
SHARED_ONCE = ("userland", "tour", "residual_study")


def _shared_fixture(item) -> str | None:
    return next((name for name in SHARED_ONCE if name in getattr(item, "fixturenames", ())), None)


def _uses_module_fixture(item) -> bool:
    definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    return any(d.scope == "module" for defs in definitions.values() for d in defs)


def _xdist_groups(items) -> dict:
    """The pytest-xdist group of each test (``--dist loadgroup``): a test using a costly session fixture goes with
    the others using it, a test using a module-scoped fixture with the rest of its module (and the module with the
    session fixture when one test uses both); any other test runs wherever a worker is free."""
    joined = {
        item.module.__name__: name for item in items if (name := _shared_fixture(item)) and _uses_module_fixture(item)
    }
    groups = {}
    for item in items:
        group = _shared_fixture(item) or (item.module.__name__ if _uses_module_fixture(item) else None)
        if group:
            groups[item] = joined.get(group, group)
    return groups


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
    """Groups for pytest-xdist; slow tests first, so that quick ones fill the workers' last minutes, and the modules
    of the tests on the emulated arm64 userland last (in their order): it is built meanwhile."""
    for item, group in _xdist_groups(items).items():
        item.add_marker(pytest.mark.xdist_group(group))
    late = {item.module for item in items if _needs_userland(item)}
    items.sort(key=lambda item: (getattr(item, "module", None) in late, item.get_closest_marker("slow") is None))


ARM64_FOLDER = "EDGEX_TEST_ARM64_FOLDER"  # where this run builds the userland: one folder for all its workers
RUN_FOLDER = "EDGEX_TEST_RUN_FOLDER"  # what the run's workers make once and share (the trained tiny model)


def pytest_configure(config):
    """The run's userland and shared folders, chosen once by the main process (pytest-xdist workers inherit them)."""
    if not hasattr(config, "workerinput"):
        os.environ[ARM64_FOLDER] = os.environ.get("EDGEX_ARM64_CACHE") or tempfile.mkdtemp(prefix="edgex-test-arm64-")
        os.environ[RUN_FOLDER] = tempfile.mkdtemp(prefix="edgex-test-run-")


def pytest_unconfigure(config):
    """The folders are removed by the process that chose them; EDGEX_ARM64_CACHE keeps the userland."""
    import shutil

    if not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ.pop(RUN_FOLDER, ""), ignore_errors=True)
        if not os.environ.get("EDGEX_ARM64_CACHE"):
            shutil.rmtree(os.environ.pop(ARM64_FOLDER, ""), ignore_errors=True)


def made_once(name: str, make):
    """``make(folder)`` once for the whole run, whichever worker asks first (under a lock; the others wait for it
    and take what it made). What it makes is read, never written, by the tests."""
    import fcntl
    import pickle
    import shutil

    folder = Path(os.environ[RUN_FOLDER]) / name
    with open(folder.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        made = folder.with_suffix(".pickle")
        if not made.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            made.write_bytes(pickle.dumps(make(folder)))
        return pickle.loads(made.read_bytes())


def pytest_collection_finish(session):
    """When a selected test needs the arm64 userland, start building it (its test module's ``build_userland``) in
    the background: mostly downloads, which then overlap the rest of the suite instead of waiting in front of it.
    Workers build into one folder under a lock: the first builds it, the others find it built."""
    needing = [item for item in session.items if _needs_userland(item)]
    if not needing:
        return
    from concurrent.futures import ThreadPoolExecutor

    build = ThreadPoolExecutor(1).submit(needing[0].module.build_userland, os.environ[ARM64_FOLDER])
    session.config.stash[_USERLAND] = build


def pytest_sessionfinish(session):
    """Wait for a userland still being built."""
    if _USERLAND in session.config.stash:
        session.config.stash[_USERLAND].exception()  # finished, whether it built or failed


_USERLAND = pytest.StashKey[object]()


@pytest.fixture(scope="session")
def userland_in_background(request):
    """The arm64 userland being built since the session started (a Future of what ``build_userland`` returns)."""
    return request.config.stash[_USERLAND]


@pytest.fixture
def fresh_conversions(tmp_path_factory, monkeypatch):
    """For tests that count conversions or model runs: nothing kept by an earlier test (in this process or on
    disk) is seen. Other tests share what the worker converted, as the commands of one pipeline do: each
    conversion is still made once, by whichever test asks first."""
    from converters.source import forget_conversions

    forget_conversions()
    monkeypatch.setenv("EDGEX_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def run_cli(*args) -> CliResult:
    """``edgex ARGS...`` in this process, its output captured (for session fixtures, where capsys is not)."""
    import io

    from edgex.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return CliResult(code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def working_in(folder: Path):
    """``folder`` as the working directory for the block (contextlib.chdir, which needs Python 3.11)."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(cwd)


def readme_commands(block: str) -> list[str]:
    """The command lines of a README code block, without comments."""
    lines = []
    for line in block.splitlines():
        line = line.split("  #")[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


# trained_tiny's TrainConfig (the other fields at their defaults): the README's tour and API example ask for it.
TINY_TRAINING = {"preset": "tiny", "epochs": 5}
TOUR_TRAIN = ["edgex", "train", "--data", "digits", "--preset", TINY_TRAINING["preset"],
              "--epochs", str(TINY_TRAINING["epochs"]), "--out", "runs/tiny"]  # fmt: skip
# Lines of the tour that other tests run already, with those tests: the tour does not run them again (every line
# of the README parses with the real CLI in test_readme, and test_readme checks that each test named here exists).
TOUR_COVERED = {
    # a sweep of the shapes of a Keras file (the pipeline's sweep stage), and the sweep command with two precisions
    # and both runtimes
    "edgex sweep --shapes runs/tiny/model.keras --precision fp32,int8 --out runs/sweep": (
        "tests/test_pipeline.py::test_run_folder_has_every_artifact_and_report",
        "tests/test_separable.py::test_sweep_on_two_shapes_end_to_end",
    ),
}


@pytest.fixture(scope="session")
def tour(trained_tiny, tmp_path_factory) -> tuple[Path, dict[str, CliResult]]:
    """The README's tour, every line as written, through the real CLI in this process (TensorFlow is imported once,
    not once per line), in a folder of its own: (folder, line -> result). Tests of the same commands read its
    outputs instead of running them again. Its `edgex train` line asks for exactly trained_tiny (digits, tiny,
    5 epochs, the default options), which test_training covers: that model stands in for it. The lines in
    TOUR_COVERED are run by the tests they name, not here."""
    import re
    import shlex

    block = next(
        b for b in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S) if "edgex info" in b
    )
    folder = tmp_path_factory.mktemp("tour")
    results = {}
    with working_in(folder):
        for line in readme_commands(block):
            words = shlex.split(line)
            if words == TOUR_TRAIN:
                copy_model(trained_tiny, folder / "runs" / "tiny")
                continue
            if line in TOUR_COVERED:
                continue
            results[line] = run_cli(*words[1:])
    return folder, results


RESIDUAL_STUDY = ("study", "residual", "--seeds", "2", "--epochs", "1", "--runtime", "litert", "--precision", "fp32")


@pytest.fixture(scope="session")
def residual_study(tmp_path_factory) -> tuple[Path, CliResult]:
    """``edgex RESIDUAL_STUDY`` run once through the CLI in a folder of its own, into its default folder
    runs/study/residual: (that folder, its result). test_study checks it; the pipeline's study stage starts from its
    trainings (the same study, seeds and epochs), as a rerun of the study would."""
    folder = tmp_path_factory.mktemp("study")
    with working_in(folder):
        result = run_cli(*RESIDUAL_STUDY)
    return folder / "runs" / "study" / "residual", result


@pytest.fixture
def cli(capsys):
    """Run ``edgex ARGS...`` in this process; returns exit code and captured output."""
    from edgex.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def digits():
    from edgex.data import load_dataset

    return load_dataset("digits", 32)


@pytest.fixture(scope="session")
def trained_tiny_run():
    """The TrainResult of a tiny Xception trained on digits for a few epochs (about 10 s): once for the run."""
    from edgex.training.trainer import TrainConfig, train

    return made_once("tiny", lambda out: train(TrainConfig(**TINY_TRAINING), out))


@pytest.fixture(scope="session")
def trained_tiny(trained_tiny_run) -> Path:
    """That model's file, with its metadata."""
    return Path(trained_tiny_run.model_path)


def copy_model(model: Path, folder: Path) -> Path:
    """``model`` and its metadata copied into ``folder`` as model.keras, for tests that write files next to it."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, folder / "model.keras")
    shutil.copy(model.with_name(model.name + ".json"), folder / "model.keras.json")
    return folder / "model.keras"


@pytest.fixture(scope="session")
def tiny_copy(trained_tiny, tmp_path_factory):
    """``tiny_copy(name)``: the trained tiny model copied into a fresh folder of its own."""
    return lambda name: copy_model(trained_tiny, tmp_path_factory.mktemp(name))


def run_python(
    code: str, *, block_tensorflow: bool = False, timeout: int = 300, env: dict | None = None, args: list | None = None
):
    """Run Python code in a fresh interpreter (optionally with TensorFlow made unimportable), ``args`` as sys.argv."""
    import subprocess

    prelude = ""
    if block_tensorflow:
        prelude = (
            "import sys\n"
            "class _Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('tensorflow', 'tf_keras', 'keras', 'tensorflow_model_optimization'):\n"
            "            raise ImportError(f'{name} is blocked in this test')\n"
            "sys.meta_path.insert(0, _Block())\n"
        )
    return subprocess.run(
        [sys.executable, "-c", prelude + code, *(args or [])],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def tiny_artifacts(trained_tiny) -> dict[str, Path]:
    """The tiny model exported once for the run: keras, tflite fp32/int8, onnx fp32/int8 (keys like 'tflite-int8')."""
    from edgex.artifacts.convert import export_model

    def export(folder: Path) -> dict[str, Path]:
        keras_path = copy_model(trained_tiny, folder)
        found = {"keras": keras_path}
        for to, precision in (("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32"), ("onnx", "int8")):
            found[f"{to}-{precision}"] = Path(export_model(keras_path, to, precision, data="digits").path)
        return found

    return made_once("artifacts", export)


SSHD = "/usr/sbin/sshd"


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 with a temporary host key and authorized key, and an ssh_config
    naming it ``edgex-test``. Skipped only when sshd is not installed (.ci/run installs it)."""
    import getpass
    import shutil
    import socket
    import subprocess
    import time

    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
        pytest.skip("OpenSSH server/client not installed (apt-get install openssh-server openssh-client)")
    folder = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    os.chmod(folder / "authorized_keys", 0o600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nStrictModes no\nUsePAM no\n"
        "PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
    )
    try:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation folder (.ci/run creates it)
    except PermissionError:
        pytest.skip("/run/sshd is missing and cannot be created without root")
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {proc.stdout.read().decode()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    config = folder / "ssh_config"
    config.write_text(
        f"Host edgex-test\n  HostName 127.0.0.1\n  Port {port}\n  User {getpass.getuser()}\n"
        f"  IdentityFile {folder / 'client_key'}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
        f"  UserKnownHostsFile {folder / 'known_hosts'}\n  LogLevel ERROR\n"
    )
    yield {"host": "edgex-test", "config": str(config), "port": port, "folder": folder}
    proc.terminate()
    proc.wait(timeout=10)


def _tick_labels(fig) -> tuple[list, set]:
    """The tick labels drawn (of ticks in view: an axis keeps spare ticks it does not draw) and the ids of all."""
    every, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            slack = 1e-9 * (high - low)
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                every.update({id(tick.label1), id(tick.label2)})
                if low - slack <= tick.get_loc() <= high + slack:
                    drawn += [t for t in (tick.label1, tick.label2) if t.get_visible() and t.get_text().strip()]
    return drawn, every


def overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of texts drawn in ``fig`` (titles, axis and tick labels, legend entries, annotations) whose boxes
    overlap. An annotation's box is its text's alone: its leader line is kept off other labels by the placement,
    and the text boxes are what a reader must tell apart."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ticks, every_tick = _tick_labels(fig)
    texts = [t for t in fig.findobj(Text) if id(t) not in every_tick and t.get_visible() and t.get_text().strip()]
    boxes = [(t.get_text(), Text.get_window_extent(t, renderer)) for t in texts + ticks]
    return [(a, b) for i, (a, box) in enumerate(boxes) for b, other in boxes[i + 1 :] if box.overlaps(other)]


def scientific_ticks(fig) -> list[str]:
    """Tick labels drawn in scientific notation (2x10^-1, 1e-05) and axis offsets, where plain numbers belong."""
    import re

    fig.canvas.draw()
    ticks = [t.get_text() for t in _tick_labels(fig)[0]]
    offsets = [axis.get_offset_text().get_text() for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)]
    return [t for t in ticks if re.search(r"\$|\\times|×|\d[eE][+-]?\d", t)] + [t for t in offsets if t]


def assert_readable(fig) -> None:
    """No two texts of ``fig`` overlap and every tick label is a plain number or a name; closes the figure."""
    import matplotlib.pyplot as plt

    overlaps, scientific = overlapping_texts(fig), scientific_ticks(fig)
    plt.close(fig)
    assert not overlaps and not scientific, (overlaps, scientific)
