"""Issue: datasets, `edgex train` / `edgex eval`, checkpoint/resume, determinism, NaN, tf.distribute."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from devices.errors import EdgexError, ModelFileError
from devices.files import sha256_file
from devices.metadata import read_metadata
from edgex.data import load_dataset, scan_folder
from edgex.training.trainer import TrainConfig, TrainingDiverged, train
from tests.conftest import ROOT


def _weights(path):
    from devices.tensorflow import load_keras_model

    return load_keras_model(path).get_weights()


def test_digits_is_real_seeded_and_stratified():
    a = load_dataset("digits", 32)
    b = load_dataset("digits", 32)
    assert a.class_names == tuple("0123456789")
    assert len(a.train) + len(a.val) == 1797
    assert a.train.images.shape[1:] == (32, 32, 3) and a.train.images.dtype == np.uint8
    assert a.fingerprint == b.fingerprint
    np.testing.assert_array_equal(a.val.labels, b.val.labels)
    counts = np.bincount(a.val.labels)
    assert counts.min() >= 30  # every digit is in the validation split
    assert load_dataset("digits", 32, seed=1).fingerprint != a.fingerprint


def test_digits_are_read_from_scikit_learns_file_as_its_loader_gives_them():
    from sklearn.datasets import load_digits

    from edgex.data import _digits_table

    table, digits = _digits_table(), load_digits()
    np.testing.assert_array_equal(table[:, :-1].reshape(-1, 8, 8), digits.images)
    np.testing.assert_array_equal(table[:, -1], digits.target)


def test_trained_model_has_metadata_and_learns(trained_tiny):
    meta = read_metadata(trained_tiny)
    assert meta.class_names == tuple("0123456789")
    assert meta.input_shape == (32, 32, 3)
    assert meta.preprocessing.name == "xception"
    assert meta.dataset.fingerprint and meta.seed == 0
    assert "tensorflow" in meta.versions
    assert meta.metrics.val_top1 > 0.85
    assert not (trained_tiny.parent / "checkpoints").exists()


@pytest.mark.slow
def test_eval_cli_reports_top1_top5_and_confusion(cli, trained_tiny):
    result = cli("eval", trained_tiny, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["samples"] == 359
    assert data["top1"] == pytest.approx(read_metadata(trained_tiny).metrics.val_top1, abs=1e-6)
    assert data["top5"] >= data["top1"]
    assert np.array(data["confusion"]).sum() == 359
    table = cli("eval", trained_tiny)
    assert "top-1" in table.stdout and "confusion" in table.stdout


@pytest.mark.slow
def test_two_seeded_runs_give_identical_weights(tmp_path):
    config = TrainConfig(preset="tiny", epochs=1, seed=7)
    first = train(config, tmp_path / "a")
    second = train(config, tmp_path / "b")
    for x, y in zip(_weights(first.model_path), _weights(second.model_path)):
        np.testing.assert_array_equal(x, y)


def test_existing_model_is_not_overwritten_without_force(tmp_path, trained_tiny, cli):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.keras").write_bytes(trained_tiny.read_bytes())
    before = sha256_file(out / "model.keras")
    result = cli("train", "--preset", "tiny", "--epochs", "1", "--out", out)
    assert result.exit_code == 2 and "--force" in result.stderr
    assert sha256_file(out / "model.keras") == before


@pytest.mark.slow
def test_resume_after_kill_minus_9_finishes_with_all_epochs(tmp_path, cli):
    """Killed in a process of its own; the refusal and the resume then run in this one (TensorFlow imported once)."""
    out = tmp_path / "run"
    log = tmp_path / "log.txt"
    cmd = [sys.executable, "-m", "edgex", "train", "--preset", "tiny", "--epochs", "4", "--out", str(out)]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.time() + 240
    while "epoch   2/4" not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "model.keras").exists()  # nothing half-written under the final name
    assert not list(out.glob("model.keras*"))

    refused = cli(*cmd[3:])
    assert refused.exit_code == 2 and "--resume" in refused.stderr

    resumed = cli(*cmd[3:], "--resume", "--json")
    assert resumed.exit_code == 0, resumed.output
    result = json.loads(resumed.stdout)
    assert result["resumed_from_epoch"] >= 2
    assert result["epochs"] == 4
    assert len(result["history"]["loss"]) == 4  # the epochs before the kill are reported too
    assert read_metadata(out / "model.keras").epochs == 4


@pytest.mark.slow
def test_a_crash_while_saving_the_model_keeps_every_epoch_for_resume(tmp_path, monkeypatch):
    import edgex.training.trainer as training

    def crash(model):
        raise KeyboardInterrupt("killed while saving")

    config = training.TrainConfig(preset="tiny", epochs=2)
    monkeypatch.setattr(training, "without_optimizer", crash)
    with pytest.raises(KeyboardInterrupt):
        training.train(config, tmp_path)
    assert not (tmp_path / "model.keras").exists()
    monkeypatch.undo()
    result = training.train(config, tmp_path, resume=True)
    assert result.resumed_from_epoch == 2 and len(result.history["loss"]) == 2  # nothing trained twice, nothing lost
    assert not (tmp_path / training.CHECKPOINT_DIR).exists()


@pytest.mark.slow
def test_nan_stops_cleanly_keeps_the_last_good_model_and_checkpoint(tmp_path, trained_tiny, monkeypatch):
    import edgex.training.trainer as training
    from devices.tfkeras import keras, tensorflow

    tf, k = tensorflow(), keras()
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.keras").write_bytes(trained_tiny.read_bytes())
    before = sha256_file(out / "model.keras")

    class GoodThenNaN(k.optimizers.schedules.LearningRateSchedule):
        def __init__(self, steps):
            self.steps = steps

        def __call__(self, step):
            return tf.where(step < self.steps, 1e-3, float("nan"))

    monkeypatch.setattr(training, "_optimizer", lambda config, steps: k.optimizers.SGD(GoodThenNaN(steps)))
    with pytest.raises(TrainingDiverged, match="NaN at epoch 2") as info:
        train(TrainConfig(preset="tiny", epochs=3), out, force=True)
    assert "was not touched" in str(info.value)
    assert sha256_file(out / "model.keras") == before
    assert training._checkpoint_epoch(out / "checkpoints") == 1  # the good epoch, not the diverged one


def _png(path: Path, mode: str, size=(12, 12)):
    from PIL import Image

    color = {"L": 128, "RGBA": (10, 200, 30, 128), "RGB": (200, 10, 30), "CMYK": (0, 50, 100, 0)}[mode]
    Image.new(mode, size, color).save(path, "JPEG" if mode == "CMYK" else "PNG")


@pytest.fixture
def messy_folder(tmp_path):
    root = tmp_path / "images"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            _png(root / cls / f"{i}.png", "RGB")
    _png(root / "cat" / "gray.png", "L")
    _png(root / "dog" / "alpha.png", "RGBA")
    _png(root / "dog" / "print.jpg", "CMYK")
    (root / "cat" / "notes.txt").write_text("not an image")
    good = (root / "dog" / "0.png").read_bytes()
    (root / "dog" / "broken.png").write_bytes(good[: len(good) // 2])
    (root / "bird").mkdir()
    return root


def test_scan_reports_every_problem(messy_folder):
    _usable, report = scan_folder(messy_folder)
    kinds = {(i.kind, Path(i.path).name) for i in report.issues}
    assert ("not_image", "notes.txt") in kinds
    assert ("corrupt", "broken.png") in kinds
    assert ("converted", "gray.png") in kinds
    assert ("converted", "alpha.png") in kinds
    assert ("converted", "print.jpg") in kinds
    assert ("empty_class", "bird") in kinds
    assert report.classes == ("cat", "dog")
    assert report.images == 11  # 8 RGB + gray + RGBA + CMYK; the text file and the broken PNG are skipped
    text = "\n".join(report.summary_lines())
    assert "broken.png" in text and "notes.txt" in text and "bird" in text


def test_folder_dataset_converts_modes_and_strict_refuses_corrupt_files(messy_folder):
    dataset = load_dataset(str(messy_folder), 32, val_split=0.25)
    images, labels = dataset.train.arrays()
    assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8
    assert set(labels) == {0, 1}
    with pytest.raises(EdgexError, match="--strict"):
        load_dataset(str(messy_folder), 32, strict=True)


def test_train_val_folders_report_a_class_missing_in_val(tmp_path):
    for split, classes in (("train", ("a", "b", "c")), ("val", ("a", "b"))):
        for cls in classes:
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2):
                _png(tmp_path / split / cls / f"{i}.png", "RGB")
    _, report = scan_folder(tmp_path)
    assert [Path(i.path).name for i in report.of_kind("missing_in_val")] == ["c"]


@pytest.mark.parametrize("val_name", ["test", "validation", None])
def test_train_with_test_or_validation_folders_keeps_the_real_classes(tmp_path, val_name):
    for split in ("train", val_name) if val_name else ("train",):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                _png(tmp_path / split / cls / f"{i}.png", "RGB")
    usable, report = scan_folder(tmp_path)
    assert report.classes == ("a", "b")  # never "train" and "test"
    assert set(usable) == ({"train", "val"} if val_name else {""})


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "not found"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no images found"),
    ],
)
def test_missing_or_empty_folder_is_a_one_line_error(cli, tmp_path, make, message):
    result = cli("train", "--data", make(tmp_path), "--out", tmp_path / "out", "--preset", "tiny")
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_single_class_folder_is_refused(tmp_path):
    (tmp_path / "only").mkdir()
    _png(tmp_path / "only" / "a.png", "RGB")
    with pytest.raises(EdgexError, match="at least 2"):
        load_dataset(str(tmp_path), 32)


def test_tfds_without_the_package_names_it():
    import importlib.util

    if importlib.util.find_spec("tensorflow_datasets") is not None:
        pytest.skip("tensorflow-datasets is installed here")
    with pytest.raises(EdgexError, match="pip install tensorflow-datasets"):
        load_dataset("tfds:mnist", 32)


def test_lambda_layer_is_refused_by_safe_mode(tmp_path, cli):
    from devices.tensorflow import load_keras_model
    from devices.tfkeras import keras

    k = keras()
    model = k.Sequential(
        [
            k.Input((32, 32, 3)),
            k.layers.Lambda(lambda x: x * 2),
            k.layers.Flatten(),
            k.layers.Dense(10, activation="softmax"),
        ]
    )
    for suffix in (".keras", ".h5"):
        path = tmp_path / f"lambda{suffix}"
        model.save(path)
        with pytest.raises(ModelFileError, match="Lambda layer"):
            load_keras_model(path)
    result = cli("eval", tmp_path / "lambda.keras")
    assert result.exit_code == 2 and "Lambda" in result.stderr


@pytest.mark.slow
def test_mixed_bfloat16_training_saves_a_float32_model(tmp_path):
    result = train(TrainConfig(preset="tiny", epochs=1, precision="mixed_bfloat16"), tmp_path)
    from devices.tensorflow import load_keras_model

    model = load_keras_model(result.model_path)
    assert all(w.dtype.name == "float32" for w in model.weights)
    assert model.layers[-1].dtype_policy.name == "float32"


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_a_training_step_is_traced_once(digits, precision):
    """compile_classifier makes the optimizer's and the metrics' variables before fit: TensorFlow traces a step
    that creates variables twice (mixed_float16: the loss-scaling optimizer's inner one)."""
    from devices.preprocess import XCEPTION
    from devices.tfkeras import keras
    from edgex.training.steps import compile_classifier

    k = keras()
    k.mixed_precision.set_global_policy(precision)
    try:
        layers = [k.layers.Conv2D(8, 3), k.layers.BatchNormalization(), k.layers.GlobalAveragePooling2D()]
        model = k.Sequential([k.Input((32, 32, 3)), *layers, k.layers.Dense(10, "softmax", dtype="float32")])
        compile_classifier(model, k.optimizers.Adam(1e-3))
        train_ds = digits.train.tf_dataset(16, XCEPTION, shuffle=True, repeat=True)
        history = model.fit(train_ds, epochs=1, steps_per_epoch=2, verbose=0)
    finally:
        k.mixed_precision.set_global_policy("float32")
    assert model.train_function.experimental_get_tracing_count() == 1
    assert set(history.history) == {"loss", "accuracy"}
    assert np.isfinite(history.history["loss"]).all()


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.network
@pytest.mark.slow
def test_two_workers_train_together_and_end_with_the_same_weights(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        cmd = [
            sys.executable,
            "-m",
            "edgex",
            "train",
            "--preset",
            "tiny",
            "--epochs",
            "1",
            "--strategy",
            "multi-worker",
            "--out",
            str(tmp_path / "out"),
            "--json",
        ]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        )
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    chief, worker = tmp_path / "out" / "model.keras", tmp_path / "out" / "worker-1" / "model.keras"
    for x, y in zip(_weights(chief), _weights(worker)):
        np.testing.assert_array_equal(x, y)
    histories = [json.loads(out)["history"]["loss"] for out, _ in outputs]
    assert histories[0] == histories[1]


def test_multi_worker_without_tf_config_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(EdgexError, match="TF_CONFIG"):
        train(TrainConfig(preset="tiny", epochs=1, strategy="multi-worker"), tmp_path)
