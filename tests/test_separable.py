"""Issue: `edgex sweep` (layer level) and `edgex compare` (model level): separable vs regular convolutions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devices.bench import results_from_json
from devices.errors import EdgexError
from edgex.models.costs import ConvSpec
from edgex.sepconv.compare import CompareRow, compare_plots
from edgex.sepconv.sweep import Roof, SweepConfig, load_shapes, speedup_table, xception_shapes
from edgex.sepconv.sweep_report import sweep_plots
from edgex.sepconv.sweep_results import rows_and_roofs
from tests.conftest import assert_readable


def _png_ok(path):
    from PIL import Image

    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 200
        colors = img.convert("L").getextrema()
        assert colors[0] < colors[1]  # not a blank image


def test_arithmetic_intensity_by_hand():
    spec = ConvSpec(h=19, w=19, c_in=728, c_out=728, k=3)
    ops = 2 * 19 * 19 * 9 * 728 * 728
    moved = 9 * 728 * 728 + 19 * 19 * 728 * 2  # int8: weights, input and output, one byte each
    assert spec.arithmetic_intensity("regular", "int8") == pytest.approx(ops / moved)
    roof = Roof("litert", "int8", compute_gops=400, bandwidth_gbs=20)
    assert roof.ridge == 20 and roof.attainable(5) == 100 and roof.attainable(100) == 400


def test_xception_shapes_are_the_distinct_layers_of_the_network():
    shapes = xception_shapes(299)
    assert len(shapes) == 16
    counts = {spec.label: count for _, spec, count in shapes}
    assert counts["19x19x728->728 k3"] == 25  # 24 middle-flow layers + the first of the exit flow
    kinds = {kind for kind, _, _ in shapes}
    assert kinds == {"regular", "separable", "shortcut"}
    assert sum(
        spec.macs("separable" if kind == "separable" else "regular") * count for kind, spec, count in shapes
    ) == pytest.approx(8.36e9 - 2048 * 1000, rel=1e-3)


def test_shapes_file_csv_yaml_and_errors(tmp_path):
    (tmp_path / "s.csv").write_text("h,w,c_in,c_out,k,stride\n19,19,64,64,3,1\n8,8,32,16,1,2\n")
    (tmp_path / "s.yaml").write_text("- {h: 19, w: 19, c_in: 64, c_out: 64}\n")
    assert [s.label for _, s, _ in load_shapes(tmp_path / "s.csv")] == ["19x19x64->64 k3", "8x8x32->16 k1/2"]
    assert load_shapes(tmp_path / "s.yaml")[0][1] == ConvSpec(h=19, w=19, c_in=64, c_out=64, k=3, stride=1)
    (tmp_path / "bad.csv").write_text("h,w\n1,2\n")
    with pytest.raises(EdgexError, match="needs integer h, w, c_in, c_out"):
        load_shapes(tmp_path / "bad.csv")
    with pytest.raises(EdgexError, match="not found"):
        load_shapes(tmp_path / "missing.csv")


def test_speedup_table_pairs_regular_with_separable():
    from edgex.sepconv.sweep import SweepRow

    spec = ConvSpec(h=19, w=19, c_in=728, c_out=728, k=3)
    rows = [
        SweepRow(
            shape=spec.label,
            variant=v,
            runtime="litert",
            precision="fp32",
            h=19,
            w=19,
            c_in=728,
            c_out=728,
            k=3,
            stride=1,
            macs=spec.macs(v),
            params=spec.params(v),
            bytes_moved=spec.bytes_moved(v),
            intensity=spec.arithmetic_intensity(v),
            p50_ms=ms,
            gops=1.0,
            roof_fraction=0.5,
            valid=True,
        )
        for v, ms in (("regular", 9.0), ("separable", 1.5), ("depthwise", 0.5), ("pointwise", 1.0))
    ]
    (entry,) = speedup_table(rows)
    assert entry["measured_speedup"] == pytest.approx(6.0)
    assert entry["theoretical_speedup"] == pytest.approx(1 / (1 / 728 + 1 / 9))
    assert entry["efficiency"] == pytest.approx(6.0 / entry["theoretical_speedup"])
    assert entry["depthwise_ms"] == 0.5 and entry["pointwise_ms"] == 1.0


@pytest.mark.slow
def test_sweep_on_two_shapes_end_to_end(tmp_path, cli):
    shapes = tmp_path / "shapes.csv"
    shapes.write_text("h,w,c_in,c_out,k,stride\n16,16,32,32,3,1\n16,16,16,32,3,2\n")
    out = tmp_path / "sweep"
    result = cli(
        "sweep", "--shapes", shapes, "--precision", "fp32,int8", "--runtime", "litert,onnxruntime", "--out", out
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "sweep.json").read_text())
    assert {(r["runtime"], r["precision"]) for r in data["roofs"]} == {
        ("litert", "fp32"),
        ("litert", "int8"),
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
    }
    assert all(r["compute_gops"] > 0 and r["bandwidth_gbs"] > 0 for r in data["roofs"])
    assert len(data["rows"]) == 2 * 4 * 4
    for row in data["rows"]:
        spec = ConvSpec(h=row["h"], w=row["w"], c_in=row["c_in"], c_out=row["c_out"], k=row["k"], stride=row["stride"])
        assert row["macs"] == spec.macs(row["variant"])
        assert row["gops"] == pytest.approx(2 * row["macs"] / row["p50_ms"] / 1e6)
        assert row["roof_fraction"] > 0
    assert len(data["speedups"]) == 2 * 4
    bench = results_from_json(json.loads((out / "bench.json").read_text()))
    assert len(bench) == 32 and bench[0].extra["variant"] == "regular"
    assert (out / "sweep.csv").read_text().count("\n") == 33
    assert "Separable speedup over regular" in (out / "summary.md").read_text()
    for name in ("latency_vs_macs.png", "speedup.png", "roofline.png"):
        _png_ok(out / name)
    for draw in sweep_plots(*rows_and_roofs(data), data["speedups"]).values():
        assert_readable(draw())
    again = cli("sweep", "--shapes", shapes, "--out", out)
    assert again.exit_code == 2 and "--force" in again.stderr


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"variants": ("grouped",)}, "unknown variant"),
        ({"runtimes": ("tvm",)}, "unknown runtime"),
        ({"precisions": ("int4",)}, "unknown precision"),
        ({"input_size": 32}, "--input-size must be >= 71"),
    ],
)
def test_sweep_config_rejects_bad_values(kwargs, fragment):
    with pytest.raises(EdgexError, match=fragment):
        SweepConfig(**kwargs)


@pytest.mark.slow
def test_compare_tiny_preset_ab_and_breakdown(tour):
    folder, results = tour  # the README tour runs `edgex compare --preset tiny --out runs/compare`
    out = folder / "runs" / "compare"
    result = results["edgex compare --preset tiny --out runs/compare"]
    assert result.exit_code == 0, result.output
    data = json.loads((out / "compare.json").read_text())
    assert {(r["label"], r["runtime"], r["precision"]) for r in data["rows"]} == {
        (m, r, p)
        for m in ("tiny_xception", "tiny_regular_twin")
        for r in ("litert", "onnxruntime")
        for p in ("fp32", "int8")
    }
    ab = {(a["runtime"], a["precision"]): a for a in data["ab"]}
    assert set(ab) == {("litert", "fp32"), ("litert", "int8"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")}
    for a in ab.values():
        assert a["theoretical_speedup"] > 3 and a["measured_speedup"] > 0 and a["params_ratio"] > 3
    shares = data["breakdown"]["tiny_xception"]["onnxruntime"]["fp32"]
    assert shares["pointwise"]["mac_share"] > 0.5 and shares["depthwise"]["time_share"] > 0
    assert sum(v["time_share"] for v in shares.values()) == pytest.approx(1.0)
    litert = data["breakdown"]["tiny_xception"]["litert"]["int8"]
    assert litert["pointwise"]["ms"] > 0 and litert["depthwise"]["ms"] > 0
    assert "Xception vs its regular-convolution twin" in (out / "summary.md").read_text()
    for name in ("time_breakdown.png", "model_latency_vs_macs.png"):
        _png_ok(out / name)
    for draw in compare_plots([CompareRow(**r) for r in data["rows"]], data["breakdown"]).values():
        assert_readable(draw())


@pytest.mark.slow
def test_compare_with_trained_models_reports_accuracy(tiny_artifacts, tmp_path):
    from edgex.sepconv.compare import CompareConfig, compare

    result = compare(
        CompareConfig(
            preset=None,
            models=(str(tiny_artifacts["keras"]),),
            runtimes=("litert",),
            precisions=("fp32",),
            data="digits",
            breakdown=False,
        ),
        tmp_path,
    )
    (row,) = result.rows
    assert row.top1 is not None and row.top1 > 0.8


@pytest.mark.slow
def test_compare_times_the_files_it_is_given_instead_of_converting(tiny_artifacts, tmp_path, monkeypatch):
    """The pipeline hands compare the files its convert and quantize stages made (and the twin's, made the same
    way): compare times and scores those, and converts only what it was not given."""
    import edgex.sepconv.compare
    from edgex.sepconv.compare import CompareConfig, compare

    model = str(tiny_artifacts["keras"])
    exported = []
    original = edgex.sepconv.compare._export
    monkeypatch.setattr(edgex.sepconv.compare, "_export", lambda *a: exported.append(a[2]) or original(*a))
    given = {(model, "litert", "int8"): str(tiny_artifacts["tflite-int8"])}
    result = compare(
        CompareConfig(
            preset=None,
            models=(model,),
            runtimes=("litert",),
            precisions=("fp32", "int8"),
            data="digits",
            breakdown=False,
        ),
        tmp_path / "c",
        artifacts=given,
    )
    rows = {r.precision: r for r in result.rows}
    assert rows["int8"].artifact == str(tiny_artifacts["tflite-int8"]) and rows["int8"].top1 > 0.8
    assert exported == ["fp32"] and Path(rows["fp32"].artifact).parent == tmp_path / "c" / "models"
    missing = {(model, "litert", "fp32"): str(tmp_path / "gone.tflite")}
    with pytest.raises(EdgexError, match=r"converted model not found: .*gone\.tflite"):
        compare(
            CompareConfig(preset=None, models=(model,), runtimes=("litert",), precisions=("fp32",), breakdown=False),
            tmp_path / "d",
            artifacts=missing,
        )
