"""Issue 17: parity sized to its claim (a sequential test), output-level parity where top-1 says nothing, the
reference memo, batched inference equal to one sample at a time, and the class-mismatch message."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import devices
from converters.parity import (
    MIN_SHARE,
    check_parity,
    look_confidences,
    look_sizes,
    passing_samples,
    sequential_parity,
    share_bounds,
)
from devices.preprocess import XCEPTION, Preprocessing


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _confident(n: int, seed: int = 0) -> np.ndarray:
    """Outputs of a trained classifier: one clear winner per sample."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (n, 10))
    logits[np.arange(n), rng.integers(0, 10, n)] += 6
    return _softmax(logits)


def _flip(outputs: np.ndarray, count: int, every: int = 1) -> np.ndarray:
    """The same outputs with the top-1 of ``count`` samples (every ``every``-th) moved to another class."""
    flipped = outputs.copy()
    for i in range(0, count * every, every):
        top = flipped[i].argmax()
        flipped[i, top], flipped[i, (top + 1) % 10] = flipped[i, (top + 1) % 10], flipped[i, top]
    return flipped


def _run(reference: np.ndarray, exported: np.ndarray, precision: str, full: bool = False):
    return sequential_parity(
        lambda n: reference[:n], lambda n: exported[:n], precision, "data", len(reference), full=full
    )


def test_clopper_pearson_bounds():
    low, high = share_bounds(149, 149)
    assert low >= 0.98 > share_bounds(148, 148)[0] and high == 1.0  # 0.98**149 < 0.05 < 0.98**148
    low, high = share_bounds(0, 10)
    assert low == 0.0 and high == pytest.approx(1 - 0.05 ** (1 / 10), abs=1e-6)
    low, high = share_bounds(50, 100)
    assert 0.41 < low < 0.42 and 0.58 < high < 0.59


def _decision_probabilities(share: float, available: int, confidence: tuple[float, float]) -> tuple[float, float]:
    """Exactly, for samples that each meet the criterion with probability ``share``: the probability that the
    sequential check decides a pass, and that it decides a failure, at some look (dynamic programming over the
    number of successes among the samples seen, the decided paths removed at each look)."""
    from math import comb

    paths, seen, passes, fails = {0: 1.0}, 0, 0.0, 0.0
    for n in look_sizes(available):
        step = n - seen
        grown: dict[int, float] = {}
        for k, mass in paths.items():
            for j in range(step + 1):
                grown[k + j] = grown.get(k + j, 0.0) + mass * comb(step, j) * share**j * (1 - share) ** (step - j)
        paths, seen = {}, n
        for k, mass in grown.items():
            low, high = share_bounds(k, n, confidence)
            if low >= MIN_SHARE:
                passes += mass
            elif high < MIN_SHARE:
                fails += mass
            else:
                paths[k] = mass
    return passes, fails


@pytest.mark.slow
def test_the_sequence_of_looks_keeps_its_95_percent():
    per_look = look_confidences(256)
    assert 0.95 < per_look[0] < 1 and 0.95 < per_look[1] < 1
    # on the threshold, both verdicts are errors: each at most 5% over the whole sequence of looks
    passes, fails = _decision_probabilities(MIN_SHARE, 256, per_look)
    assert passes <= 0.05 and fails <= 0.05
    # 95% at every look would not keep that (what the widening is for)
    assert _decision_probabilities(MIN_SHARE, 256, (0.95, 0.95))[1] > 0.1
    # and the widened check still decides clear cases
    assert _decision_probabilities(1.0, 256, per_look)[0] == pytest.approx(1.0)
    assert _decision_probabilities(0.95, 256, per_look)[1] > 0.5


def test_a_clearly_passing_export_stops_once_decided():
    reference = _confident(256)
    parity = _run(reference, reference + 1e-3, "int8")
    # a lower bound at the per-look confidence reaches 98% only on 224 agreeing samples (160 at 95% per look)
    assert parity.passed and parity.decided and parity.samples == 224 and parity.available == 256
    assert parity.interval[0] >= MIN_SHARE and parity.top1_meaningful
    fp32 = _run(reference, reference + 1e-6, "fp32")
    assert fp32.passed and fp32.decided and fp32.samples == 149 and fp32.interval[0] >= MIN_SHARE


def test_a_float_export_can_pass_at_one_look_only_so_its_bounds_are_not_widened():
    assert look_confidences(256, strict=True) == (0.95, 0.95)
    # every sample within tolerance is the only way to pass; its lower bound first reaches 98% at 149 samples,
    # the strict check's last look
    looks = look_sizes(256, strict=True)
    assert looks == [32, 64, 96, 128, 149] and looks[-1] == passing_samples()
    assert [n for n in looks if share_bounds(n, n)[0] >= MIN_SHARE] == [149]
    # so a pass happens only when the first 149 samples all meet it: at a true share of 98%, at most 5% of the time
    assert MIN_SHARE**149 <= 0.05 < MIN_SHARE**148
    # fewer samples available than that: every one is checked, and the point estimate decides
    short = _run(_confident(100), _confident(100), "fp32")
    assert short.samples == 100 and short.passed and not short.decided
    # a quantized export's criterion is not strict: its lower bound is widened and needs 224 samples
    looks = look_sizes(256)
    assert next(n for n in looks if share_bounds(n, n, look_confidences(256))[0] >= MIN_SHARE) == 224


def test_a_clearly_failing_export_stops_at_the_first_batch():
    reference = _confident(256)
    parity = _run(reference, _flip(reference, 8), "int8")
    assert not parity.passed and parity.decided and parity.samples == 32 and parity.interval[1] < MIN_SHARE
    off = reference.copy()
    off[40] += 1e-3  # one sample out of tolerance fails a float export
    fp32 = _run(reference, off, "fp32")
    assert not fp32.passed and fp32.decided and fp32.samples == 64


def test_a_borderline_export_uses_every_sample_and_says_it_is_undecided():
    reference = _confident(256)
    exported = _flip(reference, 5, every=51)  # 98.0% agreement, disagreements spread: on the threshold
    parity = _run(reference, exported, "int8")
    assert parity.samples == 256 and not parity.decided
    assert parity.passed == (parity.top1_agreement >= MIN_SHARE)
    assert parity.interval[0] < MIN_SHARE < parity.interval[1]
    assert "not decided" in parity.describe()
    full = _run(reference, reference, "int8", full=True)  # --parity-samples N: all N, even when decided
    assert full.samples == 256 and full.passed


def _near_uniform(n: int, seed: int = 0) -> np.ndarray:
    """An untrained network's softmax: every class near 1/10, margins far below 1/256."""
    return _softmax(np.random.default_rng(seed).normal(0, 1e-3, (n, 10)))


def test_top1_agreement_is_not_meaningful_below_the_outputs_resolution():
    reference = _near_uniform(64)
    # an int8 softmax output, dequantized: multiples of 1/256, ties at the top (argmax picks class 0)
    exported = np.round(reference * 256) / 256
    parity = check_parity(reference, exported, "int8", "data")
    assert not parity.top1_meaningful and parity.passed and parity.snr_db > 20
    assert "not meaningful" in parity.criterion and "ties at the top" in parity.criterion
    assert parity.top1_agreement < 0.5  # what used to fail the conversion
    grid = reference.copy()
    grid[:, 0] += 1 / 256  # outputs on a grid of 1/256 with distinct values, the float margins far below a step
    stepped = np.round(grid * 256) / 256
    parity = check_parity(reference, stepped, "int8", "data")
    assert not parity.top1_meaningful and parity.resolution == pytest.approx(1 / 256)


def test_agreement_on_near_ties_is_reported_apart_from_confident_samples():
    reference = _confident(200)
    tied = reference.copy()
    exported = np.round(reference * 256) / 256  # an int8 output: steps of 1/256
    for i in range(10):  # ten samples whose top two scores are within one step; the export breaks 6 of the ties
        top, second = tied[i].argmax(), (tied[i].argmax() + 1) % 10
        tied[i, second] = tied[i, top] - 0.5 / 256
        exported[i, second] = exported[i, top] + (1 if i < 6 else -1) / 256
    exported[50:52] = _flip(exported[50:52], 2)  # and moves the top-1 of 2 confident samples
    parity = check_parity(tied, exported, "int8", "data")
    assert parity.resolution == pytest.approx(1 / 256) and parity.near_ties == 10
    assert parity.near_tie_agreement == pytest.approx(4 / 10)
    assert parity.confident_agreement == pytest.approx(188 / 190)
    assert parity.top1_agreement == pytest.approx(192 / 200)
    assert parity.criterion == "top-1 agreement >= 98%" and not parity.passed  # the verdict's rule is unchanged
    assert parity.describe_agreement() == (
        "96.00%: 98.9% of 190 confident samples, 40.0% of 10 near ties (top-1 margin within one output step, 0.00391)"
    )
    untied = check_parity(reference, np.round(reference * 256) / 256, "int8", "data")
    assert untied.near_ties == 0 and untied.confident_agreement == 1.0 and "no near ties" in untied.describe_agreement()


def test_a_broken_conversion_still_fails_when_top1_is_not_meaningful():
    reference = _near_uniform(64)
    broken = np.zeros_like(reference)
    broken[:, 0] = 1.0  # one class always, on the output's grid
    parity = check_parity(reference, broken, "int8", "data")
    assert not parity.passed and parity.snr_db < 20
    trained = _confident(64)
    assert not check_parity(trained, np.round(_near_uniform(64) * 256) / 256, "int8", "data").passed


@pytest.fixture
def source_copy(trained_tiny, tmp_path):
    path = tmp_path / "model.keras"
    shutil.copy(trained_tiny, path)
    shutil.copy(trained_tiny.with_name("model.keras.json"), tmp_path / "model.keras.json")
    return path


def _counting_predictions(monkeypatch) -> list[int]:
    """The sizes of the batches the TensorFlow backend (every source's reference) is asked to predict."""
    from devices.tensorflow import TensorFlowModel

    calls: list[int] = []
    original = TensorFlowModel.predict
    monkeypatch.setattr(TensorFlowModel, "predict", lambda self, x, **k: calls.append(len(x)) or original(self, x, **k))
    return calls


@pytest.mark.slow
def test_reference_outputs_are_computed_once_and_never_stale(source_copy, digits, monkeypatch, fresh_conversions):
    from converters.source import load_source, reference_outputs
    from devices.tfkeras import keras

    source = load_source(source_copy)
    assert load_source(source_copy) is source  # several exports of one file load it once
    calls = _counting_predictions(monkeypatch)
    images = digits.val.take(40, seed=0).arrays()[0]
    x = XCEPTION.apply(images)
    first = reference_outputs(source, x)(32)
    again = reference_outputs(source, x.copy())(40)  # the same samples: only the 8 not computed yet
    assert calls == [32, 8] and np.array_equal(again[:32], first)
    reference_outputs(source, XCEPTION.apply(digits.train.take(40, seed=0).arrays()[0]))(32)  # other samples
    other = Preprocessing.from_dict({**XCEPTION.to_dict(), "scale": XCEPTION.scale / 2})
    reference_outputs(source, other.apply(images))(32)  # another preprocessing
    assert calls == [32, 8, 32, 32]
    model = keras().models.load_model(source_copy)
    model.set_weights([w * 0.5 for w in model.get_weights()])
    model.save(source_copy)  # a changed file: loaded and computed again
    changed = load_source(source_copy)
    assert changed is not source
    after = reference_outputs(changed, x)(32)
    assert not np.allclose(after, first)


@pytest.mark.slow
def test_source_outputs_are_kept_on_disk_for_the_next_command(source_copy, digits, monkeypatch, fresh_conversions):
    from converters.source import forget_conversions, load_source, reference_outputs
    from devices.tfkeras import keras
    from edgex.artifacts.accuracy import evaluate_model

    calls = _counting_predictions(monkeypatch)
    images = digits.val.take(40, seed=0).arrays()[0]
    x = XCEPTION.apply(images)
    first = reference_outputs(load_source(source_copy), x)(32)
    forget_conversions()  # what a new process has: nothing in memory
    again = reference_outputs(load_source(source_copy), x)(40)
    assert calls == [32, 8] and np.array_equal(again[:32], first)
    forget_conversions()
    other = Preprocessing.from_dict({**XCEPTION.to_dict(), "scale": XCEPTION.scale / 2})
    reference_outputs(load_source(source_copy), other.apply(images))(32)  # another preprocessing
    assert calls == [32, 8, 32]
    forget_conversions()
    evaluate_model(source_copy, "digits", dataset=digits, limit=40)  # edgex eval runs the model it measures
    assert calls == [32, 8, 32, 40]
    model = keras().models.load_model(source_copy)
    model.set_weights([w * 0.5 for w in model.get_weights()])
    model.save(source_copy)  # a changed file: computed again
    forget_conversions()
    assert not np.allclose(reference_outputs(load_source(source_copy), x)(32), first)
    assert calls == [32, 8, 32, 40, 32]
    monkeypatch.setenv("EDGEX_CACHE_DIR", "off")
    forget_conversions()
    reference_outputs(load_source(source_copy), x)(32)
    assert calls == [32, 8, 32, 40, 32, 32]


def test_the_float_accuracy_is_shared_and_keyed_by_data_and_preprocessing(
    source_copy, digits, monkeypatch, fresh_conversions
):
    from converters.source import load_source, reference_outputs
    from edgex.artifacts.accuracy import evaluate_model, source_accuracy

    source = load_source(source_copy)
    calls = _counting_predictions(monkeypatch)
    names = tuple(digits.class_names)
    first = source_accuracy(source, digits, XCEPTION, names, limit=50)
    evaluated = evaluate_model(source_copy, "digits", dataset=digits, limit=50)  # edgex eval of the same file
    assert evaluated.accuracy == first and len(calls) == 1
    other = Preprocessing.from_dict({**XCEPTION.to_dict(), "offset": 0.0})
    source_accuracy(source, digits, other, names, limit=50)
    source_accuracy(source, digits, XCEPTION, names, limit=60)  # 10 more samples: only those are run
    assert calls == [50, 50, 10]
    # The parity samples are validation samples: their outputs are known already.
    reference_outputs(source, XCEPTION.apply(digits.val.take(30, seed=0).arrays()[0]))(30)
    assert calls == [50, 50, 10]


PRECISION_TOLERANCE = {"tflite-fp32": 1e-5, "onnx-fp32": 1e-5, "tflite-int8": 1 / 256, "onnx-int8": 1 / 256}


@pytest.mark.parametrize("kind", list(PRECISION_TOLERANCE))
def test_batched_inference_equals_one_sample_at_a_time(tiny_artifacts, digits, kind):
    x = XCEPTION.apply(digits.val.take(70, seed=0).arrays()[0])
    with devices.load_model(tiny_artifacts[kind], threads=2) as model:
        batched = model.predict_all(x)[0]
        assert model.batches_allowed() and not model.batch_note  # the batch-1 file did run in batches
        single = np.concatenate([model.predict_all(x[i : i + 1])[0] for i in range(len(x))])
    assert np.abs(batched - single).max() <= PRECISION_TOLERANCE[kind]


@pytest.mark.parametrize("kind", ["tflite-int8", "onnx-fp32"])
def test_a_files_outputs_are_kept_per_content_and_sample(tiny_artifacts, digits, tmp_path, kind, fresh_conversions):
    """The parity check then the accuracy run of one file: each sample runs through it once; another content at
    the same path runs again."""
    x = XCEPTION.apply(digits.val.take(20, seed=1).arrays()[0])
    path = tmp_path / tiny_artifacts[kind].name

    def counted_predict(samples: np.ndarray) -> tuple[np.ndarray, list[int]]:
        with devices.load_model(path) as model:
            runs, run_all = [], model.predict_all
            model.predict_all = lambda todo, max_batch=None: runs.append(len(todo)) or run_all(todo, max_batch)
            return model.predict(samples), runs

    shutil.copy(tiny_artifacts[kind], path)
    first, runs = counted_predict(x[:12])
    assert runs == [12]
    again, runs = counted_predict(x)
    assert runs == [8] and np.array_equal(again[:12], first)
    other = "tflite-fp32" if kind == "tflite-int8" else "onnx-int8"
    shutil.copy(tiny_artifacts[other], path)
    changed, runs = counted_predict(x)
    assert runs == [20] and not np.array_equal(changed, again)


def test_a_file_rewritten_after_it_was_loaded_keeps_no_outputs_for_its_new_content(tiny_artifacts, digits, tmp_path):
    x = XCEPTION.apply(digits.val.take(8, seed=2).arrays()[0])
    path, following = tmp_path / "model.tflite", tmp_path / "following.tflite"
    shutil.copy(tiny_artifacts["tflite-fp32"], path)
    with devices.load_model(path) as loaded:
        shutil.copy(tiny_artifacts["tflite-int8"], following)
        following.replace(path)  # an export that finishes while the fp32 model is in use
        loaded.predict(x)  # the fp32 model's outputs: not to be kept as the int8 file's
    with devices.load_model(path) as now:
        assert np.array_equal(now.predict(x), now.predict_all(x)[0])


def test_eval_prepares_batches_before_it_times_the_samples(tiny_artifacts, digits, monkeypatch):
    """The batch probe (and ONNX Runtime's second session) is setup, as loading is: eval's images/s is the
    samples' throughput; the setup is reported beside it."""
    import time

    from devices.base import LoadedModel
    from edgex.artifacts.accuracy import evaluate_model

    probe = LoadedModel._probe_batches
    monkeypatch.setattr(LoadedModel, "_probe_batches", lambda self: time.sleep(0.5) or probe(self))
    result = evaluate_model(tiny_artifacts["onnx-fp32"], "digits", dataset=digits, limit=40)
    assert result.setup_seconds >= 0.5 > result.seconds and result.accuracy.samples == 40
    assert result.to_dict()["setup_seconds"] == result.setup_seconds and not result.notes
    x = XCEPTION.apply(digits.val.take(21, seed=0).arrays()[0])
    with devices.load_model(tiny_artifacts["keras"]) as keras_model:  # Keras: the graph is traced in the setup
        keras_model.prepare(len(x))
        assert keras_model._fn.experimental_get_tracing_count() == 1
        keras_model.predict_all(x, max_batch=8)  # batches of 8 and a last one of 5: no other trace
        assert keras_model._fn.experimental_get_tracing_count() == 1


def test_a_model_that_cannot_take_a_batch_falls_back_and_says_so(tmp_path):
    from devices.tfkeras import tensorflow

    tf = tensorflow()
    weights = tf.constant(np.random.default_rng(0).normal(size=(48, 3)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 4, 4, 3], tf.float32)])
    def flat(x):  # the batch of 1 is written into the reshape
        return tf.nn.softmax(tf.matmul(tf.reshape(x, [1, 48]), weights))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([flat.get_concrete_function()], flat)
    path = tmp_path / "flat.tflite"
    path.write_bytes(converter.convert())
    x = np.random.default_rng(1).uniform(-1, 1, (5, 4, 4, 3)).astype(np.float32)
    with devices.load_model(path) as model:
        outputs = model.predict(x)
        assert not model.batches_allowed() and "runs one sample at a time" in model.batch_note
    expected = np.concatenate([flat(x[i : i + 1]).numpy() for i in range(5)])
    np.testing.assert_allclose(outputs, expected, atol=1e-5)


def test_class_mismatch_gives_counts_and_the_first_difference(tiny_artifacts, tmp_path, cli):
    from edgex.artifacts.accuracy import class_mismatch

    thousand = [str(i) for i in range(1000)]
    ten = [str(i) for i in range(10)]
    assert class_mismatch(thousand, ten) == (
        "the model has 1000 classes and the data 10; the first 10 match, then the model has '10'"
    )
    assert class_mismatch(["cat", "dog"], ["cat", "cow"]) == (
        "the model has 2 classes and the data 2; they first differ at position 1: model 'dog', data 'cow'"
    )
    assert class_mismatch(ten, ten) is None
    path = tmp_path / "model.tflite"
    shutil.copy(tiny_artifacts["tflite-int8"], path)
    meta = json.loads(tiny_artifacts["tflite-int8"].with_name("model_int8.tflite.json").read_text())
    meta["class_names"] = [*ten[:3], "three", *ten[4:]]
    (tmp_path / "model.tflite.json").write_text(json.dumps(meta))
    result = cli("eval", path, "--data", "digits")
    assert result.exit_code == 2
    assert "first differ at position 3: model 'three', data '3'" in result.output


@pytest.mark.slow
def test_convert_checks_exactly_the_samples_asked_for(tiny_artifacts, tmp_path, cli):
    out = tmp_path / "m.tflite"
    args = ("--to", "tflite", "--data", "digits", "--parity-samples", "40", "--out", out)
    result = cli("convert", tiny_artifacts["keras"], *args)
    assert result.exit_code == 0, result.output
    assert "on 40 data samples" in result.output
    meta = json.loads(out.with_name("m.tflite.json").read_text())
    assert meta["parity"]["samples"] == 40 and meta["parity"]["passed"]
    assert set(meta["timing"]) == {"loading_s", "conversion_s", "parity_s"}


def test_feature_map_outputs_are_judged_per_sample():
    """One-layer sweep models output (N, H, W, C) feature maps: each position's channel vector is judged."""
    from converters.parity import check_parity

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(40, 5, 5, 16))
    step = 0.001  # fine enough that the top-1 of almost every position survives the rounding
    good = check_parity(reference, np.round(reference / step) * step, "int8", "data")
    assert good.passed and good.samples == 40 * 25 and good.interval[1] <= 1.0
    bad = check_parity(reference, rng.normal(size=reference.shape), "int8", "data")
    assert not bad.passed and bad.samples == 40 * 25
