"""Issue 14: starting weights (imagenet, a file), --from a Keras classifier, the two phases of fine-tuning with
resume, small photo folders trained from scratch, and the bad inputs of each."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from devices.metadata import read_metadata
from edgex.progress import EpochEnd, Note, PhaseBegin, WeightsLoaded
from edgex.training.trainer import BN_RECOMPUTE_SAMPLES, TrainConfig, train


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "started from" not in result.output, result.stderr  # the scan summary may come first
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The issue's folder: 244 real photo crops (96-160 px) in two classes."""
    from benchmarks.photo_folder import make_photo_folder

    return make_photo_folder(tmp_path_factory.mktemp("photos") / "photos")


@pytest.fixture(scope="module")
def few_photos(tmp_path_factory) -> Path:
    from benchmarks.photo_folder import make_photo_folder

    return make_photo_folder(tmp_path_factory.mktemp("few") / "photos", per_class=12, seed=1)


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory) -> Path:
    """A foreign classifier as a user would save one: keras.applications.MobileNetV2 (alpha 0.35, 96 px)."""
    from devices.preprocess import XCEPTION
    from devices.tfkeras import keras
    from edgex.training.transfer import recompute_bn_statistics

    path = tmp_path_factory.mktemp("foreign") / "mobilenet.keras"
    model = keras().applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None, classes=10)
    # Untrained, its BatchNormalization statistics (mean 0, variance 1) shrink the features to ~1e-9 in inference
    # mode, where no gradient reaches the top block; statistics of real-looking input make it a usable classifier.
    images = np.random.default_rng(0).integers(0, 256, (16, 96, 96, 3)).astype(np.uint8)
    recompute_bn_statistics(model, images, XCEPTION)
    model.save(path)
    return path


# -- imagenet ---------------------------------------------------------------------------------------------------
def test_imagenet_constants_are_those_of_keras_applications():
    import tf_keras.src.applications.xception as keras_xception

    from edgex.training.weights import IMAGENET_XCEPTION_NOTOP as published

    source = Path(keras_xception.__file__).read_text()
    assert published.origin == keras_xception.TF_WEIGHTS_PATH_NO_TOP
    assert f'"{published.file}"' in source and f'file_hash="{published.md5}"' in source


@pytest.mark.slow
def test_imagenet_weights_come_from_the_keras_cache_into_every_backbone_tensor(tmp_path, monkeypatch):
    import edgex.training.weights as weights
    from edgex.models import build_xception, preset_config

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    cached = tmp_path / "keras" / "models" / weights.IMAGENET_XCEPTION_NOTOP.file
    cached.parent.mkdir(parents=True)
    written = weights.keras_xception(71)
    rng = np.random.default_rng(0)  # every tensor distinct, so that a tensor copied to the wrong layer shows
    written.set_weights([w + rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in written.get_weights()])
    written.save_weights(str(cached))
    monkeypatch.setattr(  # the file is ours, not the published one: its hash is what get_file checks
        weights,
        "IMAGENET_XCEPTION_NOTOP",
        replace(weights.IMAGENET_XCEPTION_NOTOP, md5=hashlib.md5(cached.read_bytes()).hexdigest()),
    )
    config = preset_config("paper", input_size=71, classes=3)
    model = build_xception(config)
    report = weights.load_starting_weights(model, "imagenet", config, "paper")

    names = weights.keras_layer_names(written)
    backbone = [layer for layer in model.layers if layer.weights and layer.name != "predictions"]
    assert {layer.name for layer in backbone} == set(names)  # the same graph, layer for layer
    for layer in backbone:
        theirs = written.get_layer(names[layer.name]).get_weights()
        assert len(theirs) == len(layer.get_weights())
        for ours, expected in zip(layer.get_weights(), theirs):
            np.testing.assert_array_equal(ours, expected, err_msg=layer.name)
    assert report.loaded == weights.backbone_tensors(model) == 234 and report.mismatched == ()


def test_imagenet_offline_names_the_file_and_the_folder(cli, tmp_path, monkeypatch):
    import edgex.training.weights as weights

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    unreachable = replace(weights.IMAGENET_XCEPTION_NOTOP, origin="http://127.0.0.1:9/xception_notop.h5")
    monkeypatch.setattr(weights, "IMAGENET_XCEPTION_NOTOP", unreachable)
    line = _one_error_line(
        cli("train", "--preset", "paper", "--input-size", "71", "--weights", "imagenet", "--out", tmp_path / "r")
    )
    assert unreachable.file in line and str(tmp_path / "empty" / "models") in line
    line = _one_error_line(cli("train", "--preset", "mini", "--weights", "imagenet", "--out", tmp_path / "r"))
    assert "--preset paper" in line and "width 0.375" in line


# -- bad input ---------------------------------------------------------------------------------------------------
def test_bad_starting_points_are_one_line_errors(cli, tmp_path, trained_tiny, mobilenet):
    out = tmp_path / "run"
    line = _one_error_line(cli("train", "--preset", "tiny", "--weights", tmp_path / "nope.h5", "--out", out))
    assert "nope.h5" in line and "not found" in line
    line = _one_error_line(cli("train", "--preset", "tiny", "--weights", mobilenet, "--out", out))
    assert "no weights in" in line and "another architecture" in line
    line = _one_error_line(cli("train", "--preset", "mini", "--weights", trained_tiny, "--out", out))
    assert "block1_conv1" in line  # the same names at another width: what differs is shown
    line = _one_error_line(
        cli("train", "--preset", "tiny", "--weights", trained_tiny, "--unfreeze", "99", "--out", out)
    )
    assert "--unfreeze 99" in line and "6 blocks" in line
    line = _one_error_line(cli("train", "--from", trained_tiny, "--unfreeze", "some", "--out", out))
    assert "'some'" in line
    line = _one_error_line(cli("train", "--from", mobilenet, "--out", out))
    assert "--preprocessing" in line and "xception, caffe, torch, raw" in line
    assert not (out / "model.keras").exists()


def test_from_a_model_that_is_not_a_classifier(cli, tmp_path):
    from devices.tfkeras import keras

    k = keras()
    features = tmp_path / "features.keras"
    k.Sequential([k.Input((32, 32, 3)), k.layers.Conv2D(4, 3), k.layers.GlobalAveragePooling2D()]).save(features)
    line = _one_error_line(cli("train", "--from", features, "--preprocessing", "raw", "--out", tmp_path / "r"))
    assert "not an image classifier" in line


# -- fine-tuning -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_from_a_foreign_classifier_replaces_the_head_and_trains_only_the_top_block(
    cli, tmp_path, few_photos, mobilenet
):
    from devices.tensorflow import load_keras_model
    from edgex.training.transfer import block_of, model_blocks

    result = train(
        TrainConfig(
            data=str(few_photos),
            from_model=str(mobilenet),
            preprocessing="xception",
            head_epochs=1,
            epochs=1,
            unfreeze="1",
            batch_size=8,
        ),
        tmp_path / "run",
    )
    meta = read_metadata(result.model_path)
    assert result.weights["head_replaced"] and meta.class_names == ("china", "flower")
    assert meta.preprocessing.name == "xception" and meta.input_shape == (96, 96, 3)
    assert [p["name"] for p in meta.phases] == ["head", "fine-tune"] and meta.metrics.history["phase"] == [1, 2]
    before, after = load_keras_model(mobilenet), load_keras_model(result.model_path)
    top = model_blocks(after)[-1]
    assert after.outputs[0].shape[-1] == 2
    for layer in before.layers:
        if layer.weights and layer.name != "predictions":
            moved = any(
                not np.array_equal(a, b) for a, b in zip(layer.get_weights(), after.get_layer(layer.name).get_weights())
            )
            assert moved == (block_of(layer.name) == top and "BatchNormalization" not in type(layer).__name__), (
                layer.name
            )


@pytest.mark.slow
def test_both_phases_resume_in_the_phase_they_stopped_in(tmp_path, trained_tiny, few_photos, monkeypatch):
    import edgex.training.head

    # No epoch counts as progress, so that phase 1 stops early whatever these few photos' losses do.
    monkeypatch.setattr(edgex.training.head, "HEAD_MIN_DELTA", 1e9)
    config = TrainConfig(data=str(few_photos), preset="tiny", weights=str(trained_tiny), epochs=2, unfreeze="2")
    events = []

    def crash_in_phase_2(event):
        events.append(event)
        if isinstance(event, EpochEnd) and any(isinstance(e, PhaseBegin) and e.number == 2 for e in events):
            raise KeyboardInterrupt("killed after phase 2's first epoch")

    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path, progress=crash_in_phase_2)
    assert (tmp_path / "checkpoints" / "phase1" / "finished_phase.h5").is_file()
    events.clear()
    result = train(config, tmp_path, resume=True, progress=events.append)
    head = result.phases[0]
    assert 0 < head["epochs_run"] < config.head_epochs  # phase 1 stopped early, and the resume counts what it ran
    assert result.resumed_from_epoch == head["epochs_run"] + 1 and result.epochs == head["epochs_run"] + 2
    assert result.history["phase"] == [1] * head["epochs_run"] + [2, 2]
    assert [e.number for e in events if isinstance(e, PhaseBegin)] == [2]  # phase 1 was not redone
    assert not any(isinstance(e, Note) and e.text.startswith("head trained") for e in events)
    (weights,) = [e.report for e in events if isinstance(e, WeightsLoaded)]
    assert weights.to_dict() == result.weights
    assert result.weights["loaded"] > 0 and result.weights["head_skipped"] == 2  # digits' head, photos' classes
    meta = read_metadata(result.model_path)
    assert [p["name"] for p in meta.phases] == ["head", "fine-tune"]
    assert meta.phases[1]["blocks"] == ["block5", "block6"]
    assert not (tmp_path / "checkpoints").exists()


def test_a_new_head_starts_at_zero_every_class_equally_likely(trained_tiny, digits):
    """A head for other classes is left out and the new one starts at zero, so the first loss is ln(classes), not
    the saturated loss a random head gives on large pretrained features."""
    from devices.preprocess import XCEPTION
    from edgex.models import build_xception, preset_config
    from edgex.training.weights import backbone_tensors, load_starting_weights

    config = preset_config("tiny", classes=3)
    model = build_xception(config)
    report = load_starting_weights(model, str(trained_tiny), config, "tiny", ("a", "b", "c"))
    assert report.head_skipped == 2 and report.loaded == backbone_tensors(model)
    assert all(not w.any() for w in model.get_layer("predictions").get_weights())
    images = digits.val.take(8).arrays()[0]
    np.testing.assert_allclose(model(XCEPTION.apply(images), training=False).numpy(), 1 / 3, atol=1e-6)


# -- phase 1: the head on cached backbone features ------------------------------------------------------------------
def _tiny_cnn(kernel_stddev: float = 0.3, counted: bool = False):
    """A 16 px CNN with BatchNormalization whose moving statistics are at their initial values (mean 0, variance 1).
    A small ``kernel_stddev`` gives convolution outputs far smaller than that variance, as a backbone trained for a
    few steps at momentum 0.999 has: its features then barely vary from image to image (BN's epsilon is small
    enough for recomputed statistics to undo it). ``counted``: a first layer counts the images that go through the
    backbone (in ``model.seen``)."""
    from devices.tfkeras import keras, tensorflow

    k, tf = keras(), tensorflow()

    class Count(k.layers.Layer):
        def build(self, shape):
            self.seen = self.add_weight(name="seen", shape=(), dtype="int64", initializer="zeros", trainable=False)

        def call(self, x):
            self.seen.assign_add(tf.cast(tf.shape(x)[0], tf.int64))
            return x

    inputs = k.Input((16, 16, 3))
    count = Count()
    x = count(inputs) if counted else inputs
    x = k.layers.Conv2D(
        8, 3, strides=2, padding="same", kernel_initializer=k.initializers.RandomNormal(0, kernel_stddev)
    )(x)
    x = k.layers.ReLU()(k.layers.BatchNormalization(epsilon=1e-12)(x))
    outputs = k.layers.Dense(10, activation="softmax", kernel_initializer="zeros")(k.layers.Flatten()(x))
    model = k.Model(inputs, outputs)
    model.seen = count.seen if counted else None
    return model


@pytest.fixture(scope="module")
def digits16():
    """The digits at 16 px, 300 training images and the 360 validation ones."""
    from edgex.data import load_dataset

    dataset = load_dataset("digits", 16)
    return replace(dataset, train=dataset.train.take(300))


@pytest.fixture(scope="module")
def head_phase(digits16):
    """Phase 1 on a tiny CNN with settled statistics: (model, features, fit, images through the backbone)."""
    from devices.preprocess import XCEPTION
    from devices.tfkeras import keras
    from edgex.training.head import cache_features, fit_head
    from edgex.training.transfer import recompute_bn_statistics

    keras().utils.set_random_seed(0)
    model = _tiny_cnn(counted=True)
    recompute_bn_statistics(model, digits16.train.arrays()[0], XCEPTION)
    model.seen.assign(0)
    features = cache_features(model, digits16, XCEPTION)
    fit = fit_head(model, features, max_epochs=200, lr=None, batch_size=32)
    return model, features, fit, int(model.seen.numpy())


def test_the_head_phase_runs_the_backbone_once_and_keeps_its_best_epoch(head_phase, digits16):
    from devices.preprocess import XCEPTION
    from edgex.training.head import HEAD_MIN_DELTA, HEAD_PATIENCE, fit_head

    model, features, fit, seen = head_phase
    assert seen == len(digits16.train) + len(digits16.val)  # the epochs ran on the cached features
    assert features.train.shape == (300, 8 * 8 * 8) and features.describe()["augmentation"] == "none"
    # Early stopping: HEAD_PATIENCE epochs past the best epoch, the last to lower the validation loss by more than
    # HEAD_MIN_DELTA, whose weights the model's head kept.
    val_losses = [epoch["val_loss"] for epoch in fit.history]
    best = fit.best_epoch
    assert len(fit.history) == best + HEAD_PATIENCE and min(val_losses) > val_losses[best - 1] - HEAD_MIN_DELTA
    assert min(val_losses[: best - 1], default=np.inf) - HEAD_MIN_DELTA > val_losses[best - 1]
    probs = model.predict(XCEPTION.apply(digits16.val.arrays()[0]), verbose=0).astype(np.float64)
    true = probs[np.arange(len(probs)), digits16.val.labels]
    assert np.mean(probs.argmax(-1) == digits16.val.labels) == pytest.approx(fit.val_top1, abs=1 / len(probs))
    assert np.mean(-np.log(np.maximum(true, 1e-30))) == pytest.approx(val_losses[best - 1], rel=1e-3)
    assert len(fit_head(model, features, max_epochs=3, lr=None, batch_size=32).history) == 3  # the cap


@pytest.mark.slow
def test_the_head_phase_reaches_a_logistic_regression_on_the_same_features(head_phase):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, features, fit, _ = head_phase
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    probe.fit(features.train, features.train_labels)
    assert fit.val_top1 >= probe.score(features.val, features.val_labels) - 0.02, fit.history[fit.best_epoch - 1]
    assert fit.seconds < 30  # seconds, not minutes, on a loaded 2-core machine


def test_features_that_barely_vary_are_said_with_the_fix(digits16):
    from devices.preprocess import XCEPTION
    from edgex.training.head import SPREAD_FLOOR, cache_features, dead_features_line
    from edgex.training.transfer import recompute_bn_statistics

    model = _tiny_cnn(kernel_stddev=1e-5)
    dead = cache_features(model, digits16, XCEPTION).describe()
    line = dead_features_line(dead)
    assert dead["spread"] < SPREAD_FLOOR and "BatchNormalization" in line and "--recompute-bn" in line
    recompute_bn_statistics(model, digits16.train.arrays()[0], XCEPTION)
    settled = cache_features(model, digits16, XCEPTION).describe()
    assert settled["spread"] > 100 * SPREAD_FLOOR and dead_features_line(settled) is None


@pytest.mark.parametrize(
    "recompute, head_epochs",
    [(False, 2), pytest.param(True, 2, marks=pytest.mark.slow), pytest.param(False, 0, marks=pytest.mark.slow)],
)
def test_train_warns_once_before_training_unless_the_statistics_are_recomputed(
    cli, tmp_path, monkeypatch, recompute, head_epochs
):
    import edgex.cli.render as render
    from edgex.training.head import CHECK_SAMPLES

    monkeypatch.setattr(render, "err_console", render.console)  # warnings in line with the progress, to see the order
    path = tmp_path / "unsettled.keras"
    _tiny_cnn(kernel_stddev=1e-5).save(path)
    out = tmp_path / "run"
    args = ["--from", path, "--preprocessing", "xception", "--epochs", "1", "--batch-size", "256", "--out", out]
    result = cli("train", *args, "--head-epochs", head_epochs, *(["--recompute-bn"] if recompute else []))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    warnings = [line for line in lines if line.startswith("warning")]
    meta = read_metadata(out / "model.keras")
    first = meta.phases[0]  # phase 1, or with --head-epochs 0 the fine-tuning, which then checks the features
    assert first["features"]["augmentation"] == "none" and first["name"] == ("head" if head_epochs else "fine-tune")
    assert first.get("epochs_run") == (head_epochs or None)
    # without a head phase, the check runs the backbone over a sample of the training images, not all of them
    assert (first["features"]["train_images"] == CHECK_SAMPLES) == (not head_epochs)
    if recompute:
        assert warnings == [] and meta.sections["bn_statistics"]["recomputed_on_train_images"] == BN_RECOMPUTE_SAMPLES
        return
    assert len(warnings) == 1 and "barely vary" in warnings[0] and "--recompute-bn" in warnings[0]  # not repeated
    order = [next(i for i, line in enumerate(lines) if line.startswith(s)) for s in ("backbone", "warning")]
    order.append(next(i for i, line in enumerate(lines) if line.startswith(("head trained", "epoch"))))
    assert order == sorted(order)  # said before the first epoch


def test_recompute_bn_is_for_fine_tuning():
    from devices.errors import EdgexError

    with pytest.raises(EdgexError, match="--recompute-bn is for fine-tuning"):
        TrainConfig(recompute_bn=True)


# -- small data from scratch ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_small_photo_folder_from_scratch_is_not_silently_broken(photos, tmp_path):
    result = train(TrainConfig(data=str(photos), preset="mini", epochs=5), tmp_path)
    meta = read_metadata(result.model_path)
    assert meta.dataset.train + meta.dataset.val == 244
    assert result.val_top1 >= 0.9, (result.val_top1, result.history["val_accuracy"])
    bn = meta.sections["bn_statistics"]
    assert bn["recomputed_on_train_images"] == meta.dataset.train
    assert bn["kept"] and bn["val_top1_after"] >= bn["val_top1_before"] + 0.01  # the moving averages had not settled


def test_high_training_accuracy_at_chance_on_validation_is_said():
    from edgex.training.steps import chance_notes

    (line,) = chance_notes({"accuracy": [0.6, 1.0]}, 0.5, 2, bn_recomputed=False)
    assert "100%" in line and "50%" in line and "BatchNormalization" in line
    assert chance_notes({"accuracy": [1.0]}, 0.95, 2, bn_recomputed=True) == []


# -- preprocessing ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, mode", [("xception", "tf"), ("caffe", "caffe"), ("torch", "torch")])
def test_preprocessings_are_those_of_keras_and_the_same_in_tf_data(name, mode):
    from tf_keras.applications import imagenet_utils

    from devices.preprocess import PREPROCESSINGS, Preprocessing
    from edgex.data import Split

    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype(np.uint8)
    prep = Preprocessing.from_dict(PREPROCESSINGS[name].to_dict())  # as read back from metadata
    expected = imagenet_utils.preprocess_input(images.astype(np.float32), mode=mode)
    np.testing.assert_allclose(prep.apply(images), expected, atol=1e-5)
    (batch,) = Split(np.zeros(4, np.int64), images, image_size=8).tf_dataset(4, prep)
    np.testing.assert_allclose(batch[0].numpy(), expected, atol=1e-5)
