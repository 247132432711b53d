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
