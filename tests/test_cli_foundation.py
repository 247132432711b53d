"""Issue: the CLI skeleton (lazy imports, one-line errors), `edgex info`, `edgex model summary`, layering."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import ROOT, run_python


def test_help_imports_no_tensorflow():
    result = run_python(
        "import sys\n"
        "from edgex.cli import main\n"
        "for args in (['--help'], ['model', '--help'], ['train', '--help'], ['info', '--help']):\n"
        "    assert main(args) == 0, args\n"
        "names = ('tensorflow', 'tf_keras', 'onnx', 'onnxruntime', 'tf2onnx', 'ai_edge_litert')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_model_summary_json_for_the_paper_preset(cli):
    result = cli("model", "summary", "--preset", "paper", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["trainable_params"] == 22_855_952
    assert data["total_params"] == 22_910_480
    assert data["macs"] == pytest.approx(8.36e9, rel=1e-3)
    assert data["regular_twin"]["mac_ratio"] == pytest.approx(0.1214, abs=0.001)
    assert [b["block"] for b in data["blocks"]][:3] == ["block1", "block2", "block3"]


def test_model_summary_table_shows_blocks_totals_and_twin_ratio(cli):
    result = cli("model", "summary", "--preset", "mini")
    assert result.exit_code == 0, result.output
    assert "block4" in result.stdout and "total" in result.stdout
    assert "regular-conv twin" in result.stdout and "fewer MACs" in result.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["model", "summary", "--preset", "huge"], "unknown preset 'huge'; choose one of: mini, paper, tiny"),
        (["model", "summary", "--input-size", "8"], "input size must be an integer >= 32, got 8"),
        (["model", "summary", "--width", "0"], "width must be in (0, 4], got 0.0"),
        (["model", "summary", "--classes", "1"], "classes must be an integer >= 2, got 1"),
        (["model", "summary", "--conv", "grouped"], "'grouped' is not one of 'separable', 'regular'"),
        (["model", "summry"], "No such command 'summry'"),
    ],
)
def test_bad_input_is_one_line_exit_2_without_traceback(cli, args, fragment):
    result = cli(*args)
    assert result.exit_code == 2
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ("bench", "model.tflite", "--runtime", "nope"),
        ("predict", "model.tflite", "image.png", "--runtime", "nope"),
        ("sweep", "--runtime", "litert,nope"),
        ("compare", "--runtime", "nope,onnxruntime"),
        ("study", "residual", "--runtime", "nope"),
    ],
)
def test_runtime_options_take_the_registrys_runtimes(cli, args):
    """Issue 26: --runtime is checked against devices.registry.RUNTIMES before anything runs, one name or each
    name of a comma-separated list; the error lists the registry's runtimes."""
    from devices.registry import RUNTIMES

    result = cli(*args)
    assert result.exit_code == 2
    assert "'nope'" in result.stderr and ", ".join(RUNTIMES) in result.stderr.replace("'", "")
    assert len(result.stderr.strip().splitlines()) == 1


def test_device_options_take_the_registrys_device_names(cli):
    from devices.registry import DEVICE_NAMES

    result = cli("bench", "model.tflite", "--device", "cpu", "--device", "npu")
    assert result.exit_code == 2
    assert "unknown device 'npu'" in result.stderr and ", ".join(DEVICE_NAMES) in result.stderr


def _options(command, path=()):
    """(command path, option) of every option of a click command and its subcommands."""
    for name, sub in getattr(command, "commands", {}).items():
        yield from _options(sub, (*path, name))
    for param in command.params:
        for opt in getattr(param, "opts", ()):
            yield " ".join(path), opt, param


def test_shared_options_read_the_same_in_every_command():
    """Issue 26: the options several commands take are declared once (edgex/cli/options.py), so their help cannot
    drift apart, and their choices come from the registries."""
    import typer.main

    from devices.registry import DEVICE_NAMES, RUNTIMES
    from edgex.cli import app
    from edgex.cli.options import DATA_FORMS, THREAD_COUNTS_HELP

    helps: dict[str, set] = {}
    for command, opt, param in _options(typer.main.get_command(app)):
        helps.setdefault(opt, set()).add(param.help)
        if opt == "--device":
            assert ", ".join(DEVICE_NAMES) in param.help, command
        if opt == "--data":
            assert DATA_FORMS in param.help, command
        if opt == "--runtime" and hasattr(param.type, "choices"):
            assert [getattr(c, "value", c) for c in param.type.choices] == ["auto", *RUNTIMES], command
    assert len(helps["--force"]) == 1
    assert helps["--threads"] == {THREAD_COUNTS_HELP, "Runtime threads (unset: the runtime's choice)."}
    assert len(helps["--device"]) == 2  # one device, or several (repeatable)


def test_debug_flag_shows_the_traceback(cli):
    result = cli("--debug", "model", "summary", "--width", "0")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr


def test_info_json_lists_versions_cpu_and_providers(cli):
    result = cli("info", "--json", "--no-gpus")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for package in ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "onnx", "onnxruntime"):
        assert package in data["packages"], package
    assert data["cpu"]["cores"] >= 1 and data["cpu"]["model"]
    assert "CPUExecutionProvider" in data["onnxruntime_providers"]
    assert isinstance(data["cpu"]["features"], list)


@pytest.mark.parametrize("setting, on", [("", True), ("0", False), ("1", True)])
def test_info_says_whether_onednn_is_on_and_why_next_to_the_isa(setting, on, monkeypatch, cli):
    """Issue 28: without importing TensorFlow (--no-gpus), the setting edgex makes before it is imported; on x86-64
    oneDNN is turned on unless TF_ENABLE_ONEDNN_OPTS says otherwise."""
    import platform

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", setting)
    result = cli("info", "--no-gpus")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if "tensorflow onednn" in line)
    assert ("│ on (" if on else "│ off (TF_ENABLE_ONEDNN_OPTS=0 in the environment)") in row
    assert "isa features" in result.stdout and "grouped convolutions" in result.stdout


def test_devices_package_never_imports_tensorflow_at_module_level():
    # Not even inside functions: the TensorFlow backend gets TensorFlow through devices.tfkeras, by name.
    pattern = re.compile(r"^\s*(import tensorflow|from tensorflow|import tf_keras|from tf_keras)", re.M)
    for path in (ROOT / "devices").rglob("*.py"):
        assert not pattern.search(path.read_text()), path


@pytest.mark.parametrize("package, forbidden", [("devices", ("edgex", "converters")), ("converters", ("edgex",))])
def test_dependencies_point_downwards(package, forbidden):
    pattern = re.compile(r"^\s*(?:from|import)\s+(\w+)", re.M)
    for path in (ROOT / package).rglob("*.py"):
        imported = set(pattern.findall(path.read_text()))
        assert not imported & set(forbidden), (path, imported & set(forbidden))


@pytest.mark.slow
def test_devices_imports_and_runs_a_tflite_model_without_tensorflow(tmp_path):
    from devices.tfkeras import keras, tensorflow

    tf, k = tensorflow(), keras()
    model = k.Sequential(
        [
            k.Input((8, 8, 3)),
            k.layers.Conv2D(4, 3),
            k.layers.GlobalAveragePooling2D(),
            k.layers.Dense(3, activation="softmax"),
        ]
    )
    path = tmp_path / "small.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    result = run_python(
        "import numpy as np, sys, importlib, pkgutil\n"
        "import devices\n"
        "for m in pkgutil.iter_modules(devices.__path__):\n"
        "    if m.name != 'tensorflow':\n"
        "        importlib.import_module('devices.' + m.name)\n"
        f"model = devices.load_model({str(path)!r}, threads=1)\n"
        "out = model.predict(np.zeros((2, 8, 8, 3), np.float32))\n"
        "assert out.shape == (2, 3), out.shape\n"
        "assert 'tensorflow' not in sys.modules\n"
        "print('OK')\n",
        block_tensorflow=True,
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_the_terminal_shows_notes_and_epochs_and_lets_other_events_pass(capsys):
    """Issue 26: the library sends typed events (edgex.progress), the CLI renders them; an event a view has no use
    for passes silently."""
    from edgex.cli.progress import TrainingProgress
    from edgex.progress import EpochEnd, Measured, Note

    progress = TrainingProgress("qat epoch")
    progress(Note("grouped convolutions train on TensorFlow's grouped kernel: oneDNN on"))
    progress(Measured(row=None, index=1, total=2))
    progress(EpochEnd(epoch=1, epochs=2, metrics={"loss": 0.5, "accuracy": 0.75, "lr": 0.1}, seconds=1.25))
    out, err = capsys.readouterr()
    assert err == "grouped convolutions train on TensorFlow's grouped kernel: oneDNN on\n"
    assert out == "qat epoch   1/2  loss 0.5000  accuracy 0.7500  1.2s\n"


# Environment failures (issue 27): one line naming the user's path, the cause and what to do, an exit code each.

FAULT_CODES = {"DiskFull": 4, "ReadOnlyFolder": 5, "FolderMissing": 6, "PermissionDenied": 7, "FileChanged": 8}


@pytest.mark.parametrize(
    "code, kind, says",
    [
        ("ENOSPC", "DiskFull", "cannot write /data/out/model.tflite: not enough space on its disk"),
        ("EROFS", "ReadOnlyFolder", "cannot write /data/out/model.tflite: /data/out is on a read-only file system"),
        ("ENOENT", "FolderMissing", "the folder /data/out does not exist"),
        ("ENOTDIR", "FolderMissing", "a part of /data/out is a file, not a folder"),
        ("EACCES", "PermissionDenied", "permission denied in /data/out; change its permissions or choose another"),
        ("EPERM", "PermissionDenied", "not permitted in /data/out"),
    ],
)
def test_os_errors_name_the_final_path_not_the_temporary_one(code, kind, says):
    import errno
    import os

    from devices.errors import EdgexError
    from devices.files import explained

    temporary = "/data/out/.model.tflite.tmp-k2j4x9.tflite"  # what atomic_path writes before its rename
    fault = explained(OSError(getattr(errno, code), os.strerror(getattr(errno, code)), temporary))
    assert type(fault).__name__ == kind and fault.exit_code == FAULT_CODES[kind]
    assert says in str(fault) and ".tmp-" not in str(fault) and "\n" not in str(fault)
    assert isinstance(fault, EdgexError) and isinstance(fault, OSError) and fault.errno == getattr(errno, code)


def test_library_errors_that_wrap_an_os_error_are_explained_too():
    from devices.files import explained

    # TensorFlow's SavedModel writer on a full disk: its own error type, the errno only in the message
    saver = RuntimeError(
        "{{function_node __wrapped__SaveV2}} /data/out/.model.tmp-5ms_fon9/variables/variables_temp/part-00000; "
        "No space left on device [Op:SaveV2]"
    )
    fault = explained(saver)
    assert type(fault).__name__ == "DiskFull" and str(fault).startswith("cannot write /data/out/model: ")
    # a file the user named, read by a library: "use", not "write"
    read = explained(PermissionError(13, "Permission denied", "/data/in/model.keras"))
    assert str(read).startswith("cannot use /data/in/model.keras: permission denied in /data/in")
    assert explained(ValueError("bad value")) is None and explained(OSError(5, "Input/output error", "/x")) is None
    assert len(set(FAULT_CODES.values())) == len(FAULT_CODES) and not set(FAULT_CODES.values()) & {0, 1, 2, 3, 130}


def test_a_folder_removed_during_a_write_names_the_file_and_leaves_nothing(tmp_path):
    import shutil

    from devices.errors import FolderMissing
    from devices.files import atomic_path

    folder = tmp_path / "out"
    expected = f"cannot write {folder / 'model.tflite'}: the folder {folder} does not exist"
    with pytest.raises(FolderMissing, match=re.escape(expected)), atomic_path(folder / "model.tflite") as tmp:
        tmp.write_bytes(b"model")
        shutil.rmtree(folder)  # another process, or an unmounted drive
    assert not folder.exists() and list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def small_disks(tmp_path_factory):
    """A real full disk (a 64 KiB tmpfs) and a real read-only folder (a tmpfs remounted read-only); chmod would not
    stop root. Skipped where mounting is not allowed."""
    import subprocess

    root = tmp_path_factory.mktemp("disks")
    full, readonly = root / "full", root / "readonly"
    mounted = []
    for folder, size in ((full, "64k"), (readonly, "1m")):
        folder.mkdir()
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
        if made.returncode:
            for done in mounted:
                subprocess.run(["umount", str(done)])
            pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip() or made.returncode}")
        mounted.append(folder)
    subprocess.run(["mount", "-o", "remount,ro", str(readonly)], check=True)
    yield full, readonly
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("to, name", [("tflite", "model.tflite"), ("saved-model", "model_saved")])
def test_a_full_disk_is_one_line_naming_the_output(tiny_copy, small_disks, cli, to, name):
    full, _ = small_disks
    out = full / name
    result = cli("convert", tiny_copy("full"), "--to", to, "--out", out)
    assert result.exit_code == FAULT_CODES["DiskFull"], result.output
    assert result.stderr.strip().splitlines() == [
        f"error: cannot write {out}: not enough space on its disk (64 KiB free in {full}); free space or choose another"
    ]
    assert list(full.iterdir()) == []  # no half-written file, no hidden temporary


@pytest.mark.slow
def test_a_read_only_folder_is_one_line_naming_the_output(tiny_copy, small_disks, cli):
    _, readonly = small_disks
    model = tiny_copy("readonly")
    for out in (readonly / "model.tflite", readonly / "new" / "model.tflite"):  # its temporary; a folder for it
        result = cli("convert", model, "--to", "tflite", "--out", out)
        assert result.exit_code == FAULT_CODES["ReadOnlyFolder"], result.output
        assert result.stderr.strip().splitlines() == [
            f"error: cannot write {out}: {out.parent} is on a read-only file system; choose a writable folder"
        ]
    assert list(readonly.iterdir()) == []


def test_a_model_rewritten_while_it_is_read_is_named(tiny_copy, cli, monkeypatch):
    """Another process rewrites the model between edgex hashing it and loading it: the loaded model would not be
    the content hashed (conversions and outputs are kept by that hash), so the command stops."""
    import shutil

    import devices.tensorflow

    model = tiny_copy("rewritten")
    load = devices.tensorflow.load_keras_model

    def load_while_rewritten(path):
        shutil.copy(model, model.with_name("next.keras"))
        model.with_name("next.keras").replace(model)  # what a training or export that finishes meanwhile does
        return load(path)

    monkeypatch.setattr(devices.tensorflow, "load_keras_model", load_while_rewritten)
    result = cli("convert", model, "--to", "tflite")
    assert result.exit_code == FAULT_CODES["FileChanged"], result.output
    assert result.stderr.strip().splitlines() == [
        f"error: {model} changed while edgex was reading it (another process rewrote it); run the command again "
        "once whatever writes it has finished"
    ]
