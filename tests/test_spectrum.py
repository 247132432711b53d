"""Issue 15: the spectrum between regular and depthwise separable convolutions (segments), built, counted,
converted and swept."""

from __future__ import annotations

import numpy as np
import pytest

from devices.errors import EdgexError
from edgex.models import build_xception, preset_config
from edgex.models.costs import ConvSpec, model_cost
from edgex.models.segments import SPECTRUM, allowed_segments, groups_for, parse_segments


def _seeded(config, seed: int = 7):
    from devices.tfkeras import keras

    keras().utils.set_random_seed(seed)
    return build_xception(config)


@pytest.mark.slow
def test_segments_c_is_todays_separable_model():
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    for extra in ({}, {"intermediate_activation": "elu"}):
        separable = _seeded(preset_config("tiny", **extra))
        segments = _seeded(preset_config("tiny", segments="C", **extra))
        assert segments.count_params() == separable.count_params()
        assert [w.shape for w in segments.weights] == [w.shape for w in separable.weights]
        for a, b in zip(segments.get_weights(), separable.get_weights()):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(segments(x).numpy(), separable(x).numpy())


def test_grouped_conv_with_c_groups_computes_the_depthwise_separable_conv():
    """The spectrum's definition at G = C, checked on the layers themselves: a Conv2D with C groups (C -> C) and a
    1x1 convolution carry the separable convolution's weights and give its outputs."""
    from devices.tfkeras import keras

    k = keras()
    x = np.random.default_rng(1).standard_normal((2, 9, 9, 16)).astype(np.float32)
    separable = k.layers.SeparableConv2D(24, 3, padding="same", use_bias=False)
    expected = separable(x).numpy()
    depthwise, pointwise = separable.get_weights()
    grouped = k.layers.Conv2D(16, 3, padding="same", groups=16, use_bias=False)
    one_by_one = k.layers.Conv2D(24, 1, use_bias=False)
    grouped.build(x.shape)
    one_by_one.build((2, 9, 9, 16))
    grouped.set_weights([depthwise.reshape(3, 3, 1, 16)])  # (k, k, C, 1) -> (k, k, C / G, C)
    one_by_one.set_weights([pointwise])
    np.testing.assert_allclose(one_by_one(grouped(x)).numpy(), expected, atol=1e-5)
    spec = ConvSpec(h=9, w=9, c_in=16, c_out=24, k=3)
    assert grouped.count_params() + one_by_one.count_params() == spec.segment_params(16) == spec.params("separable")


# A child process builds grouped tiny models (one per segments value), saves and loads each, and computes its
# outputs and gradients on the path edgex chose for that process (TensorFlow's grouped kernel, or tf-keras' XLA one);
# with oneDNN on it also computes them on the XLA path. The oneDNN setting must be made before TensorFlow is
# imported, hence the children: one per setting, for every segments value (each child imports TensorFlow once).
_GROUPED_GRADIENTS = """
import json, os, sys, numpy as np
from devices.tensorflow import load_keras_model
from devices.tfkeras import grouped_convolution_path, keras, onednn_enabled, tensorflow
from edgex.models import build_xception, preset_config

tf, reports = tensorflow(), {}

def outputs_and_gradients(model, x):
    with tf.GradientTape() as tape:
        y = model(x, training=True)
        loss = tf.reduce_sum(y * tf.range(10, dtype=tf.float32))
    grads = tape.gradient(loss, model.trainable_weights)
    return y.numpy(), np.concatenate([g.numpy().ravel() for g in grads])

path = grouped_convolution_path()
for segments in sys.argv[2:]:
    out = os.path.join(sys.argv[1], segments.replace("/", "_"))
    os.makedirs(out)
    keras().utils.set_random_seed(7)
    model = build_xception(preset_config("tiny", segments=segments))
    model.save(out + "/grouped.keras")
    loaded = [l for l in load_keras_model(out + "/grouped.keras").submodules if getattr(l, "groups", 1) > 1]
    x = tf.constant(np.random.default_rng(2).standard_normal((4, 32, 32, 3)).astype(np.float32))
    np.savez(out + "/chosen.npz", *outputs_and_gradients(model, x))
    native = [l for l in model.submodules if "_jit_compiled_convolution_op" in vars(l)]
    for layer in native:
        vars(layer).pop("_jit_compiled_convolution_op")  # back to tf-keras' XLA path
    if native:
        np.savez(out + "/xla.npz", *outputs_and_gradients(model, x))
    reports[segments] = {"folder": out, "native_layers": len(native), "grouped_layers": len(loaded),
                         "loaded_native": sum("_jit_compiled_convolution_op" in vars(l) for l in loaded)}
print(json.dumps({"onednn": onednn_enabled(), "native": path.native, "line": path.describe(), "models": reports}))
"""
GROUPED_SEGMENTS = ("2", "C/4")


def _grouped_runs(onednn: str, folder) -> tuple[dict, dict]:
    """The child's report, and (outputs, gradients) on the chosen path by segments value."""
    import json

    from tests.conftest import run_python

    folder.mkdir()
    done = run_python(_GROUPED_GRADIENTS, env={"TF_ENABLE_ONEDNN_OPTS": onednn}, args=[str(folder), *GROUPED_SEGMENTS])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    chosen = {s: np.load(f"{m['folder']}/chosen.npz") for s, m in report["models"].items()}
    return report, {s: (c["arr_0"], c["arr_1"]) for s, c in chosen.items()}


def _same_outputs_and_gradients(a, b):
    np.testing.assert_allclose(a[0], b[0], rtol=1e-4, atol=1e-6)
    assert np.linalg.norm(a[1] - b[1]) <= 1e-4 * np.linalg.norm(b[1])  # float rounding of another sum order


@pytest.mark.slow
def test_grouped_convolutions_train_with_onednn_on_and_off(tmp_path):
    """Issue 28: grouped models train on any x86-64 CPU. With oneDNN on (edgex's choice on x86-64, whatever the
    ISA), built and loaded grouped layers run TensorFlow's own kernel, with the XLA path's outputs and gradients;
    with oneDNN forced off (TensorFlow's default on AVX2-only CPUs, whose Eigen kernels have no grouped gradient)
    they stay on the XLA path and train, with the same outputs and gradients as the native run. For G = 2 and
    G = C/4."""
    on, native = _grouped_runs("", tmp_path / "on")
    assert on["onednn"] and on["native"], on
    assert "TensorFlow's grouped kernel: oneDNN on" in on["line"]
    off, fallback = _grouped_runs("0", tmp_path / "off")
    assert not off["onednn"] and not off["native"], off
    assert off["line"].startswith("grouped convolutions train on tf-keras' XLA path: oneDNN off")
    assert set(on["models"]) == set(off["models"]) == set(GROUPED_SEGMENTS)
    for segments in GROUPED_SEGMENTS:
        model = on["models"][segments]
        assert model["native_layers"] == model["grouped_layers"] == model["loaded_native"] > 0, (segments, model)
        xla = np.load(f"{model['folder']}/xla.npz")
        _same_outputs_and_gradients(native[segments], (xla["arr_0"], xla["arr_1"]))
        model = off["models"][segments]
        assert model["native_layers"] == model["loaded_native"] == 0 < model["grouped_layers"], (segments, model)
        _same_outputs_and_gradients(fallback[segments], native[segments])


class _FirstEpoch(Exception):
    pass


def _events_until_the_first_epoch(run) -> list:
    """The progress events ``run(progress)`` sends until its first epoch begins (where it is stopped: nothing
    trains, the model is only built and compiled)."""
    from edgex.progress import EpochBegin

    events = []

    def stop_at_the_first_epoch(event):
        events.append(event)
        if isinstance(event, EpochBegin):
            raise _FirstEpoch

    with pytest.raises(_FirstEpoch):
        run(stop_at_the_first_epoch)
    return events


def test_fine_tuning_grouped_convolutions_says_their_path_once_before_the_first_epoch(digits):
    """Issue 28: fine_tune() (QAT, pruning) says in one Note, before the first epoch, which kernel grouped
    convolutions train on and why; a model without grouped convolutions gets no such line."""
    from devices.tfkeras import grouped_convolution_path, keras
    from edgex.progress import Note
    from edgex.training.steps import say_grouped_path
    from edgex.training.trainer import fine_tune

    k = keras()
    layers = [k.layers.Conv2D(8, 3), k.layers.Conv2D(8, 3, groups=2), k.layers.DepthwiseConv2D(3)]
    grouped = k.Sequential([k.Input((32, 32, 3)), *layers, k.layers.GlobalAveragePooling2D(), k.layers.Dense(10)])
    events = _events_until_the_first_epoch(lambda progress: fine_tune(grouped, digits, epochs=1, progress=progress))
    assert events[0] == Note(grouped_convolution_path().describe())
    assert sum(isinstance(e, Note) for e in events) == 1
    said = []
    say_grouped_path(
        k.Sequential([k.Input((8, 8, 4)), k.layers.Conv2D(4, 3), k.layers.DepthwiseConv2D(3)]), said.append
    )
    assert said == []


def test_training_grouped_convolutions_says_their_path_before_the_first_phase(tmp_path):
    """Issue 28: train() (edgex train --segments, the spectrum study) says it once, before the run's first phase."""
    from devices.tfkeras import grouped_convolution_path
    from edgex.progress import Note
    from edgex.training.trainer import TrainConfig, train

    config = TrainConfig(preset="tiny", model={"segments": "2"}, epochs=1)
    events = _events_until_the_first_epoch(lambda progress: train(config, tmp_path, progress=progress))
    assert events == [Note(grouped_convolution_path().describe()), *events[1:]]
    assert [type(e).__name__ for e in events] == ["Note", "PhaseBegin", "EpochBegin"]


@pytest.mark.parametrize("segments", ["1", "2", "8", "C/4", "C"])
def test_counted_params_and_macs_follow_the_analytic_formulas(segments):
    """Built and counted layer by layer, against PAPER.md's H*W*k^2*C*C/G spatial cost applied to the separable
    network's layers."""
    separable = model_cost(build_xception(preset_config("tiny")))
    counted = model_cost(build_xception(preset_config("tiny", segments=segments)))
    assert counted.macs == separable.spectrum_macs(segments)
    assert counted.total_params == separable.spectrum_params(segments)
    if segments == "1":  # one segment: every spatial conv is a regular C -> C conv
        assert counted.macs_by_kind()["grouped"] == 0 and counted.macs_by_kind()["regular"] > separable.macs


def test_segment_formulas_by_hand():
    spec = ConvSpec(h=10, w=10, c_in=8, c_out=16, k=3)
    assert spec.segment_macs(1) == 100 * (9 * 8 * 8 + 8 * 16)
    assert spec.segment_macs(4) == 100 * (9 * 8 * 2 + 8 * 16)
    assert spec.segment_macs(8) == spec.macs("separable")
    assert spec.segment_params(2) == 9 * 8 * 4 + 8 * 16
    # one extra weight set over separable at fp32: (9 * 8 * 4 - 9 * 8) weights of 4 bytes
    assert spec.segment_bytes(2) - spec.bytes_moved("separable") == (9 * 8 * 4 - 9 * 8) * 4
    with pytest.raises(EdgexError, match="divisor of 8"):
        spec.segment_macs(3)


def test_segments_values_parse_and_resolve():
    assert [parse_segments(v) for v in (4, "c", "c/4", " C/2 ")] == ["4", "C", "C/4", "C/2"]
    assert groups_for("C/4", 272) == 68 and groups_for("8", 272) == 8 and groups_for("C", 24) == 24
    assert allowed_segments([24, 48, 272]) == list(SPECTRUM)
    for bad in ("0", "x", "C/0", "-1"):
        with pytest.raises(EdgexError, match="segments must be"):
            parse_segments(bad)


@pytest.mark.parametrize("preset", ["tiny", "mini", "paper"])
def test_the_papers_spectrum_is_valid_for_every_preset(preset):
    config = preset_config(preset)
    assert allowed_segments(config.separable_input_channels()) == list(SPECTRUM)


def test_a_segments_value_that_does_not_divide_is_a_one_line_error(cli):
    with pytest.raises(EdgexError, match=r"allowed: 1, 2, 4, 8, C/8, C/4, C/2, C$"):
        preset_config("mini", segments="3")
    with pytest.raises(EdgexError, match="conv='separable'"):
        preset_config("mini", conv="regular", segments="2")
    result = cli("model", "summary", "--preset", "mini", "--segments", "C/16")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "C/16" in result.stderr and "allowed: 1, 2, 4, 8" in result.stderr


def test_model_summary_shows_the_segments(cli):
    result = cli("model", "summary", "--preset", "tiny", "--segments", "C/2", "--json")
    assert result.exit_code == 0
    import json

    data = json.loads(result.stdout)
    assert data["config"]["segments"] == "C/2"
    assert data["segments"]["groups_by_input_channels"]["16"] == 8
    assert data["macs_by_kind"]["grouped"] > 0 and "regular_twin" not in data


@pytest.mark.slow
def test_a_grouped_model_converts_to_tflite_and_onnx_with_parity(tmp_path):
    from converters import convert
    from converters.source import source_from_keras
    from devices.registry import load_model

    model = build_xception(preset_config("tiny", segments="2"))
    source = source_from_keras(model, tmp_path / "grouped.keras")
    x = np.random.default_rng(0).standard_normal((8, 32, 32, 3)).astype(np.float32)
    expected = model(x[:4]).numpy()
    for to, precision in (("tflite", "fp32"), ("onnx", "fp32"), ("tflite", "int8"), ("onnx", "int8")):
        out = tmp_path / f"grouped_{precision}.{'tflite' if to == 'tflite' else 'onnx'}"
        result = convert(source, to, precision, out=out, calibration=x, parity_inputs=x[:4])
        if precision == "fp32":
            assert result.parity.passed and result.parity.max_abs_diff < 1e-4, (to, result.parity)
        outputs = load_model(out).predict(x[:4])
        tolerance = 1e-4 if precision == "fp32" else 0.1  # int8: probabilities within 0.1 of the float model's
        np.testing.assert_allclose(outputs, expected, atol=tolerance)


@pytest.mark.slow
def test_sweep_segments_times_the_spectrum_and_places_the_ops(tmp_path, cli):
    shapes = tmp_path / "shapes.csv"
    shapes.write_text("h,w,c_in,c_out,k,stride\n8,8,16,24,3,1\n")
    out = tmp_path / "sweep"
    result = cli("sweep", "--shapes", shapes, "--segments", "2,C", "--runtime", "litert,onnxruntime",
                 "--precision", "int8", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    import json

    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [(r["variant"], r["groups"], r["runtime"]) for r in rows] == [
        ("segments:2", 2, "litert"),
        ("segments:2", 2, "onnxruntime"),
        ("segments:C", 16, "litert"),
        ("segments:C", 16, "onnxruntime"),
    ]
    spec = ConvSpec(h=8, w=8, c_in=16, c_out=24, k=3)
    for row in rows:
        assert row["macs"] == spec.segment_macs(row["groups"]) and row["params"] == spec.segment_params(row["groups"])
        assert row["gops"] == pytest.approx(2 * row["macs"] / row["p50_ms"] / 1e6)
    placed = {(r["variant"], r["runtime"]): r["placement"] for r in rows}
    # what this LiteRT and ONNX Runtime do with an int8 grouped conv, reported rather than assumed
    assert placed[("segments:2", "litert")].startswith("XNNPACK: CONV_2D x2")
    assert placed[("segments:C", "litert")].startswith("XNNPACK: DEPTHWISE_CONV_2D, CONV_2D")
    assert "QLinearConv" in placed[("segments:2", "onnxruntime")]
    assert "The spectrum" in (out / "summary.md").read_text()
    for name in ("spectrum_latency.png", "spectrum_macs.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    from edgex.sepconv.sweep_report import sweep_plots
    from edgex.sepconv.sweep_results import rows_and_roofs
    from tests.conftest import assert_readable

    data = json.loads((out / "sweep.json").read_text())
    for draw in sweep_plots(*rows_and_roofs(data), data["speedups"]).values():
        assert_readable(draw())
    bad = cli("sweep", "--shapes", shapes, "--segments", "3", "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and "segments 3 does not divide the 16 input channels" in bad.stderr
