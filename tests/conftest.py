"""Shared fixtures: tiny models and data built once per session, and a CLI runner that returns exit codes."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


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
def trained_tiny(tmp_path_factory) -> Path:
    """A tiny Xception trained on digits for a few epochs (about 10 s), with its metadata."""
    from edgex.training import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny")
    result = train(TrainConfig(preset="tiny", epochs=5), out)
    return Path(result.model_path)


def run_python(code: str, *, block_tensorflow: bool = False, timeout: int = 300, env: dict | None = None):
    """Run Python code in a fresh interpreter (optionally with TensorFlow made unimportable)."""
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
        [sys.executable, "-c", prelude + code],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def tiny_artifacts(trained_tiny, tmp_path_factory) -> dict[str, Path]:
    """The tiny model exported once: keras, tflite fp32/int8, onnx fp32/int8 (keys like 'tflite-int8')."""
    import shutil

    from edgex.export import export_model

    folder = tmp_path_factory.mktemp("artifacts")
    keras_path = folder / "model.keras"
    shutil.copy(trained_tiny, keras_path)
    shutil.copy(trained_tiny.with_name("model.keras.json"), folder / "model.keras.json")
    found = {"keras": keras_path}
    for to, precision in (("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32"), ("onnx", "int8")):
        found[f"{to}-{precision}"] = Path(export_model(keras_path, to, precision, data="digits").path)
    return found
