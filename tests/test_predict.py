"""Issue 14: `edgex predict` on the host for every format edgex writes, and the same top-1 from a deployed bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devices.bundle import safe_extract


@pytest.fixture(scope="module")
def digit_images(tmp_path_factory, digits) -> tuple[Path, list[int]]:
    """Six validation digits written as PNG files (the model reads them like any photo)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("digits") / "images"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(digits.val.images[i * 37]).save(folder / f"{i}.png")
    return folder, [int(digits.val.labels[i * 37]) for i in range(6)]


def _top1(cli, model, images, *extra) -> list[str]:
    result = cli("predict", model, images, "--json", *extra)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert all(len(p["top"]) == 3 for p in data["predictions"])
    return [p["top"][0]["class"] for p in data["predictions"]]


@pytest.mark.slow
def test_predict_on_the_host_with_every_format(cli, tiny_artifacts, digit_images):
    folder, labels = digit_images
    tops = {name: _top1(cli, path, folder) for name, path in tiny_artifacts.items()}
    assert len(tops["keras"]) == 6
    assert sum(t == str(label) for t, label in zip(tops["keras"], labels)) >= 5  # the trained model reads the files
    for name in ("tflite-fp32", "onnx-fp32"):
        assert tops[name] == tops["keras"], name
    for name in ("tflite-int8", "onnx-int8"):
        assert sum(a == b for a, b in zip(tops[name], tops["keras"])) >= 5, name
    table = cli("predict", tiny_artifacts["keras"], folder / "0.png", "--top-k", "2")
    assert table.exit_code == 0 and table.stdout.count(",") == 1 and "0.png" in table.stdout


@pytest.mark.slow
def test_predict_an_edge_tpu_model_on_the_cpu(cli, tiny_artifacts, digit_images, tmp_path):
    from edgex.artifacts.convert import export_model

    result = export_model(tiny_artifacts["keras"], "edgetpu", data="digits", out=tmp_path / "model_quant.tflite")
    folder, _ = digit_images
    assert _top1(cli, result.path, folder) == _top1(cli, tiny_artifacts["tflite-int8"], folder)


def test_a_bundle_predicts_the_same_top1_as_the_host(cli, tiny_artifacts, digit_images, tmp_path):
    from edgex.deploy import build_bundle

    folder, _ = digit_images
    bundle = build_bundle(tiny_artifacts["tflite-int8"], "rpi4", tmp_path / "bundle.tar.gz")
    root = safe_extract(Path(bundle.path), tmp_path / "unpacked")
    images = sorted(str(p) for p in folder.iterdir())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the bundle's own devices package
    done = subprocess.run(
        [sys.executable, "-m", "devices", "predict", *images, "--json"],
        cwd=root,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    on_device = [r["top"][0]["class"] for r in json.loads(done.stdout)]
    assert on_device == _top1(cli, tiny_artifacts["tflite-int8"], *images)


def test_predict_bad_input_is_one_line(cli, tiny_artifacts, tmp_path):
    from devices.tfkeras import keras

    k = keras()
    foreign = tmp_path / "foreign.keras"
    k.Sequential([k.Input((32, 32, 3)), k.layers.GlobalAveragePooling2D(), k.layers.Dense(2)]).save(foreign)
    from PIL import Image

    Image.new("RGB", (40, 40), (10, 200, 30)).save(tmp_path / "image.png")
    for args, expected in (
        ((foreign, tmp_path), "--preprocessing"),
        ((tiny_artifacts["keras"], tmp_path / "missing.png"), "image not found"),
        ((tmp_path / "missing.keras", tmp_path), "model not found"),
        ((tiny_artifacts["keras"], tmp_path, "--preprocessing", "bgr"), "bgr"),
    ):
        result = cli("predict", *args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and expected in lines[0], result.output
