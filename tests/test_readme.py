"""The README cannot rot: its two commands are the ones CI runs, every command in it parses with the real CLI,
and the tour runs verbatim."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import (
    ROOT,
    TINY_TRAINING,
    TOUR_COVERED,
    TOUR_TRAIN,
    copy_model,
    readme_commands,
    working_in,
)

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.S)
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
YAML_BLOCKS = re.findall(r"```yaml\n(.*?)```", README, re.S)


def _allreadme_commands() -> list[list[str]]:
    found = []
    for block in BLOCKS:
        for line in readme_commands(block):
            for part in line.split("&&"):
                words = shlex.split(part)
                while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value prefixes
                    words = words[1:]
                if words:
                    found.append(words)
    return found


def test_the_two_commands_come_first_and_ci_runs_the_second():
    first = readme_commands(BLOCKS[0])
    assert first[0] == 'pip install -e ".[all]" && edgex pipeline'
    assert first[1] == 'pip install -e ".[all,dev]" && pytest'
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[all,dev]"\npytest\n' in ci


@pytest.mark.parametrize("words", [w for w in _allreadme_commands() if w[0] == "edgex"], ids=lambda w: " ".join(w)[:60])
def test_every_edgex_command_in_the_readme_parses(words):
    import typer

    from edgex.cli import app

    command = typer.main.get_command(app)
    ctx = command.context_class(command, info_name="edgex")
    args = list(words[1:])
    while hasattr(command, "get_command"):  # walk the groups: edgex -> model -> summary
        name = args.pop(0)
        command = command.get_command(ctx, name)
        assert command is not None, f"no command {name!r}"
        if hasattr(command, "get_command"):
            ctx = command.context_class(command, info_name=name, parent=ctx)
    command.make_context(name, args, parent=ctx)  # parses and converts every option, as a real run would


def _device_args(words: list[str]) -> list[str] | None:
    """``python [-B] -m devices ARGS`` -> ARGS."""
    if words[0] != "python" or "-m" not in words:
        return None
    at = words.index("-m")
    return words[at + 2 :] if words[at + 1 : at + 2] == ["devices"] else None


DEVICE_COMMANDS = [w for w in _allreadme_commands() if _device_args(w) is not None]


@pytest.mark.parametrize("words", DEVICE_COMMANDS, ids=lambda w: " ".join(w))
def test_every_device_command_in_the_readme_parses(words):
    from devices.__main__ import parser

    parser().parse_args(_device_args(words))


def test_the_readme_recipe_resolves(tmp_path):
    from edgex.pipeline import check_recipe, resolve_recipe

    (recipe_text,) = YAML_BLOCKS
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe_text)
    recipe = resolve_recipe(path)
    check_recipe(recipe)
    assert recipe.deploy.target == "coral-usb"


@pytest.mark.slow
def test_the_tour_runs_verbatim(tour):
    folder, results = tour
    lines = readme_commands(next(b for b in BLOCKS if "edgex info --no-gpus" in b))
    assert " ".join(TOUR_TRAIN) in lines  # the model the tour starts from
    assert set(TOUR_COVERED) <= set(lines)
    assert list(results) == [line for line in lines if line != " ".join(TOUR_TRAIN) and line not in TOUR_COVERED]
    for line, done in results.items():
        assert done.exit_code == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert (folder / "runs" / "tiny_rpi4.tar.gz").exists()

    # On the device: the README's device commands, verbatim, in the unpacked bundle.
    from PIL import Image

    from devices.bundle import safe_extract

    device = safe_extract(folder / "runs" / "tiny_rpi4.tar.gz", folder / "device")
    Image.new("L", (16, 16), 0).save(device.parent / "digit.png")  # next to the bundle: a file inside fails verify
    for words in DEVICE_COMMANDS:
        done = subprocess.run([sys.executable, *words[1:]], cwd=device, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(words)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def test_the_tour_lines_run_elsewhere_name_tests_that_exist():
    """A tour line the tour leaves to other tests (TOUR_COVERED) names tests that are there to run it."""
    import importlib

    for line, tests in TOUR_COVERED.items():
        assert tests, line
        for test in tests:
            path, name = test.split("::")
            module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
            assert callable(getattr(module, name, None)), (line, test)


@pytest.mark.slow
def test_the_python_api_example_runs(tmp_path, trained_tiny_run, monkeypatch, capsys):
    """The example as written, in this process. Its train() asks for exactly trained_tiny (digits, tiny, 5 epochs,
    the defaults), which test_training covers: that run stands in for it, as in the tour."""
    import dataclasses

    import edgex.training
    from edgex.training import TrainConfig

    (example,) = PYTHON_BLOCKS
    train = edgex.training.train

    def trained(config, out):
        if config != TrainConfig(**TINY_TRAINING):
            return train(config, out)
        model = copy_model(Path(trained_tiny_run.model_path), Path(out))
        return dataclasses.replace(trained_tiny_run, model_path=str(model))

    monkeypatch.setattr(edgex.training, "train", trained)
    with working_in(tmp_path):
        exec(compile(example, "README.md", "exec"), {})
    agreement, p50 = (float(x) for x in capsys.readouterr().out.split())
    assert agreement >= 0.9 and p50 > 0
    assert (tmp_path / "runs" / "api" / "model_int8.tflite").is_file()
