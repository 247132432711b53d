"""Issue: the paper-exact Xception builder, its twin, and the cost counter."""

from __future__ import annotations

import numpy as np
import pytest

from devices.errors import EdgexError
from edgex.models import create_model, list_presets, preset_config
from edgex.models.costs import ConvSpec, model_cost
from edgex.models.xception import XceptionConfig


@pytest.fixture(scope="module")
def paper_model():
    return create_model("paper")


def test_paper_parameter_counts_match_the_paper_and_keras(paper_model):
    cost = model_cost(paper_model)
    assert cost.trainable_params == 22_855_952  # Chollet 2017, Table 3
    assert cost.total_params == 22_910_480  # keras.applications.Xception


def test_paper_macs_and_their_split_by_layer_type(paper_model):
    cost = model_cost(paper_model)
    assert cost.macs == pytest.approx(8.36e9, rel=1e-3)
    share = {k: v / cost.macs for k, v in cost.macs_by_kind().items()}
    assert share["pointwise"] == pytest.approx(0.91, abs=0.01)
    assert share["regular"] == pytest.approx(0.05, abs=0.005)
    assert share["shortcut"] == pytest.approx(0.03, abs=0.005)
    assert share["depthwise"] == pytest.approx(0.016, abs=0.004)


@pytest.mark.slow
def test_weights_of_keras_applications_xception_give_identical_outputs(paper_model):
    from devices.tfkeras import keras

    k = keras()
    reference = k.applications.Xception(weights=None)
    ours = [layer for layer in paper_model.layers if layer.weights]
    theirs = [layer for layer in reference.layers if layer.weights]
    assert len(ours) == len(theirs)
    for mine, ref in zip(ours, theirs):
        assert [w.shape for w in mine.weights] == [w.shape for w in ref.weights], mine.name
        mine.set_weights(ref.get_weights())
    x = np.random.default_rng(0).uniform(-1, 1, (2, 299, 299, 3)).astype(np.float32)
    features = lambda m, name: k.Model(m.input, m.get_layer(name).output)(x).numpy()  # noqa: E731
    ours_f = features(paper_model, "block14_sepconv2_act")
    ref_f = features(reference, "block14_sepconv2_act")
    assert np.abs(ours_f - ref_f).max() <= 1e-5 * max(1.0, np.abs(ref_f).max())
    np.testing.assert_allclose(paper_model(x).numpy(), reference(x).numpy(), atol=1e-5)


@pytest.mark.slow
def test_regular_twin_matches_the_analytic_formulas(paper_model):
    separable = model_cost(paper_model)
    twin = create_model("paper", conv="regular")
    counted = model_cost(twin)
    assert counted.macs == separable.regular_twin_macs()
    assert counted.total_params == separable.regular_twin_params()
    for (name, kind, spec), (twin_name, twin_kind, _) in zip(separable.conv_specs(), counted.conv_specs()):
        assert name == twin_name
        if kind == "separable":
            assert twin_kind == "regular"
            layer = twin.get_layer(name)
            assert layer.count_params() == 9 * spec.c_in * spec.c_out
    out = create_model("tiny", conv="regular")(np.zeros((1, 32, 32, 3), np.float32)).numpy()
    assert out.shape == (1, 10) and np.isfinite(out).all()


@pytest.mark.parametrize(
    "spec, variant, macs, params",
    [
        (ConvSpec(h=19, w=19, c_in=728, c_out=728, k=3), "regular", 19 * 19 * 9 * 728 * 728, 9 * 728 * 728),
        (
            ConvSpec(h=19, w=19, c_in=728, c_out=728, k=3),
            "separable",
            19 * 19 * (9 * 728 + 728 * 728),
            9 * 728 + 728 * 728,
        ),
        (ConvSpec(h=147, w=147, c_in=64, c_out=128, k=3), "depthwise", 147 * 147 * 9 * 64, 9 * 64),
        (ConvSpec(h=147, w=147, c_in=64, c_out=128, k=3), "pointwise", 147 * 147 * 64 * 128, 64 * 128),
        (
            ConvSpec(h=299, w=299, c_in=3, c_out=32, k=3, stride=2, padding="valid"),
            "regular",
            149 * 149 * 9 * 3 * 32,
            9 * 3 * 32,
        ),
        (ConvSpec(h=147, w=147, c_in=64, c_out=128, k=1, stride=2), "regular", 74 * 74 * 64 * 128, 64 * 128),
    ],
)
def test_conv_spec_arithmetic_by_hand(spec, variant, macs, params):
    assert spec.macs(variant) == macs
    assert spec.params(variant) == params


def test_separable_ratio_is_one_over_cout_plus_one_over_k_squared():
    spec = ConvSpec(h=19, w=19, c_in=728, c_out=728, k=3)
    assert spec.macs("separable") / spec.macs("regular") == pytest.approx(1 / 728 + 1 / 9)
    assert spec.theoretical_ratio() == pytest.approx(1 / 728 + 1 / 9)


@pytest.mark.parametrize(
    "variant, precision, expected",
    [
        # weights + input + output (+ the depthwise output written and read for separable), in bytes
        ("regular", "fp32", 4 * (9 * 8 * 16) + 4 * (10 * 10 * 8 + 10 * 10 * 16)),
        ("regular", "int8", 1 * (9 * 8 * 16) + 1 * (10 * 10 * 8 + 10 * 10 * 16)),
        ("separable", "fp32", 4 * (9 * 8 + 8 * 16) + 4 * (10 * 10 * 8 + 10 * 10 * 16 + 2 * 10 * 10 * 8)),
        ("depthwise", "fp16", 2 * (9 * 8) + 4 * (10 * 10 * 8 + 10 * 10 * 8)),
        ("pointwise", "int8", 1 * (8 * 16) + 1 * (10 * 10 * 8 + 10 * 10 * 16)),
    ],
)
def test_bytes_moved_by_hand(variant, precision, expected):
    assert ConvSpec(h=10, w=10, c_in=8, c_out=16, k=3).bytes_moved(variant, precision) == expected


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"input_size": 8}, "input size"),
        ({"width": 0}, "width"),
        ({"classes": 1}, "classes"),
        ({"middle_blocks": -1}, "middle blocks"),
        ({"conv": "grouped"}, "conv"),
        ({"intermediate_activation": "tanh"}, "intermediate activation"),
        ({"conv": "regular", "intermediate_activation": "relu"}, "separable"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_invalid_configs_raise_clear_errors(overrides, message):
    with pytest.raises(EdgexError, match=message):
        XceptionConfig(**overrides)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(EdgexError, match="mini, paper, tiny"):
        preset_config("huge")


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_builds_and_runs(preset):
    config = preset_config(preset)
    if preset == "paper":
        config = config.replace(input_size=71, classes=10)  # same layers, small input: the paper one is tested above
    model = create_model(preset, input_size=config.input_size, classes=config.classes)
    out = model(np.zeros((1, config.input_size, config.input_size, 3), np.float32)).numpy()
    assert out.shape == (1, config.classes)
    np.testing.assert_allclose(out.sum(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "elu"])
def test_intermediate_activation_ablation_keeps_parameters(activation):
    base = model_cost(create_model("tiny"))
    ablated_model = create_model("tiny", intermediate_activation=activation)
    assert model_cost(ablated_model).total_params == base.total_params
    assert any(layer.name.endswith("_intermediate_act") for layer in ablated_model.layers)


def test_residual_ablation_drops_the_shortcuts():
    model = create_model("tiny", residual=False)
    assert not any("shortcut" in layer.name or layer.name.endswith("_add") for layer in model.layers)
