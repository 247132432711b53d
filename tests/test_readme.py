"""The README cannot rot: its two commands are the ones CI runs, every command in it parses with the real CLI,
and the tour runs verbatim."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.S)


def _commands(block: str) -> list[str]:
    lines = []
    for line in block.splitlines():
        line = line.split("  #")[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _all_commands() -> list[list[str]]:
    found = []
    for block in BLOCKS:
        for line in _commands(block):
            for part in line.split("&&"):
                words = shlex.split(part)
                while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value prefixes
                    words = words[1:]
                if words:
                    found.append(words)
    return found


def test_the_two_commands_come_first_and_ci_runs_the_second():
    first = _commands(BLOCKS[0])
    assert first[0] == 'pip install -e ".[all]" && edgex pipeline'
    assert first[1] == 'pip install -e ".[all,dev]" && pytest'
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[all,dev]"' in ci and "python -m pytest" in ci


@pytest.mark.parametrize("words", [w for w in _all_commands() if w[0] == "edgex"], ids=lambda w: " ".join(w)[:60])
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


@pytest.mark.parametrize("words", [w for w in _all_commands() if w[:3] == ["python", "-m", "devices"]],
                         ids=lambda w: " ".join(w))
def test_every_device_command_in_the_readme_parses(words):
    from devices.__main__ import parser

    parser().parse_args(words[3:])


@pytest.mark.slow
def test_the_tour_runs_verbatim(tmp_path):
    tour = next(b for b in BLOCKS if "edgex info --no-gpus" in b)
    for line in _commands(tour):
        done = subprocess.run(shlex.split(line.replace("edgex", f"{sys.executable} -m edgex", 1)), cwd=tmp_path,
                              capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "120"})
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert (tmp_path / "runs" / "tiny_rpi4.tar.gz").exists()
