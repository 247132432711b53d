"""Issue: `edgex convert` to every format and precision, each export checked against the original."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import devices
from converters import FORMATS, convert
from converters.edgetpu import compatibility_report, parse_compiler_output
from converters.registry import CALIBRATION_SAMPLES, default_output
from devices.errors import EdgexError, ModelFileError
from devices.files import metadata_path
from devices.metadata import CalibrationRecord, read_metadata
from devices.sysinfo import int8_dot_products_saturate
from edgex.artifacts.convert import export_model

CASES = [(to, precision) for to, target in FORMATS.items() for precision in target.precisions]


@pytest.fixture(scope="module")
def model_dir(tiny_copy):
    return tiny_copy("convert").parent


@pytest.mark.slow
@pytest.mark.parametrize("to, precision", CASES, ids=[f"{t}-{p}" for t, p in CASES])
def test_every_format_and_precision_passes_its_parity_check(model_dir, to, precision):
    result = export_model(model_dir / "model.keras", to, precision, data="digits")
    assert result.parity.passed, result.parity
    assert result.parity.inputs == "data" and result.parity.samples == 256
    if precision == "fp32":
        assert result.parity.max_abs_diff <= 1e-4
    elif precision == "fp16":
        assert result.parity.max_abs_diff <= 1e-2
    else:
        assert result.parity.top1_agreement >= 0.98
    meta = read_metadata(result.path)
    assert meta.precision == precision and meta.format == to
    assert meta.source.sha256 and meta.input_shape == (32, 32, 3)
    assert meta.class_names == tuple("0123456789") and meta.preprocessing.name == "xception"
    assert meta.parity.max_abs_diff == pytest.approx(result.parity.max_abs_diff)
    if precision == "int8":
        assert meta.calibration == CalibrationRecord(samples=CALIBRATION_SAMPLES, data="digits")
    with devices.load_model(result.path) as model:  # the artifact runs in its runtime, metadata or not
        assert model.predict(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 10)


@pytest.mark.slow
def test_the_data_loads_while_the_model_loads_and_only_at_the_size_the_model_takes(tiny_copy, monkeypatch):
    import threading

    import edgex.data
    from edgex.artifacts.accuracy import evaluate_model

    loads, load = [], edgex.data.load_dataset

    def recorded(spec, image_size, **options):
        loads.append((threading.current_thread().name.split("_")[0], image_size))
        return load(spec, image_size, **options)

    monkeypatch.setattr(edgex.data, "load_dataset", recorded)
    keras_path = tiny_copy("ahead")
    result = export_model(keras_path, "tflite", "fp32", data="digits")
    assert loads == [("edgex-data", 32)] and result.parity.inputs == "data"
    loads.clear()
    assert evaluate_model(result.path, "digits", limit=20).accuracy.samples == 20  # eval loads it ahead too
    assert loads == [("edgex-data", 32)]
    meta = json.loads(metadata_path(keras_path).read_text())
    metadata_path(keras_path).write_text(json.dumps({**meta, "input_shape": [48, 48, 3]}))
    loads.clear()
    export_model(keras_path, "tflite", "fp32", data="digits", force=True)
    assert loads == [("edgex-data", 48), ("MainThread", 32)]  # metadata that does not fit the model: loaded again


@pytest.mark.slow
def test_int8_tflite_io_types_and_quantization_parameters_are_recorded(model_dir, tmp_path):
    for io in ("int8", "uint8"):
        result = export_model(
            model_dir / "model.keras", "tflite", "int8", data="digits", io=io, out=tmp_path / f"io_{io}.tflite"
        )
        inp = read_metadata(result.path).quantization.inputs[0]
        assert inp.dtype == io and inp.scale > 0
        assert result.parity.passed


@pytest.mark.slow
def test_dynamic_batch_runs_any_batch(model_dir, tmp_path):
    for to, suffix in (("tflite", ".tflite"), ("onnx", ".onnx")):
        result = export_model(
            model_dir / "model.keras", to, "fp32", data="digits", batch="dynamic", out=tmp_path / f"dyn{suffix}"
        )
        with devices.load_model(result.path) as model:
            assert model.inputs[0].batch is None
            assert model.run([np.zeros((5, 32, 32, 3), np.float32)])[0].shape == (5, 10)


def test_onnx_file_is_named_and_passes_the_full_checker(model_dir):
    import onnx

    path = model_dir / "model_fp32.onnx"
    if not path.exists():
        export_model(model_dir / "model.keras", "onnx", "fp32", data="digits")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["output"]
    assert model.opset_import[0].version == 17


@pytest.mark.slow
def test_onnx_int8_through_the_tflite_route(model_dir, tmp_path):
    result = export_model(
        model_dir / "model.keras",
        "onnx",
        "int8",
        data="digits",
        onnx_int8_route="tflite",
        out=tmp_path / "via_tflite.onnx",
    )
    assert result.details["onnx_int8_route"] == "tflite"
    if int8_dot_products_saturate():  # 8-bit TFLite weights overflow ONNX Runtime's non-VNNI x86 kernels: say so
        assert result.parity.passed or any("no VNNI" in note for note in result.notes)
    else:
        assert result.parity.passed


@pytest.mark.slow
def test_a_saved_model_folder_is_a_source_too(model_dir, tmp_path):
    saved = default_output(model_dir / "model.keras", "saved-model", "fp32")
    if not saved.exists():  # the export test above made it (TensorFlow's saver takes seconds); alone, its own
        saved = Path(export_model(model_dir / "model.keras", "saved-model", data="digits", out=tmp_path / "saved").path)
    result = convert(saved, "tflite", "fp32", out=tmp_path / "from_saved.tflite")
    assert result.parity.passed and result.parity.inputs == "random"


@pytest.mark.slow
def test_a_foreign_keras_model_converts(tmp_path):
    from devices.tfkeras import keras

    k = keras()
    k.utils.set_random_seed(0)
    mobilenet = k.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3), classes=5, alpha=0.35)
    mobilenet.save(tmp_path / "mobilenet.keras")
    for to, precision in (("tflite", "fp32"), ("onnx", "fp32"), ("tflite", "int8")):
        result = export_model(tmp_path / "mobilenet.keras", to, precision, data="digits")
        assert result.parity.passed, (to, precision, result.parity)
        assert read_metadata(result.path).input_shape == (64, 64, 3)


@pytest.mark.slow
def test_edgetpu_export_meets_the_requirements_and_reports_ops(model_dir):
    result = export_model(model_dir / "model.keras", "edgetpu", data="digits", force=True)
    with devices.load_model(result.path) as model:
        assert model.inputs[0].dtype == "uint8" and model.inputs[0].shape == (1, 32, 32, 3)
        assert model.outputs[0].dtype == "uint8"
    report = result.details["edgetpu"]
    assert report["mapped_ops"] == report["total_ops"] > 10
    assert report["first_fallback"] is None
    assert {op["op"] for op in report["ops"]} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "FULLY_CONNECTED"}
    assert 0 < report["parameter_bytes"] < 8 * 2**20 and report["streamed_bytes"] == 0
    if shutil.which("edgetpu_compiler") is None:
        assert any("edgetpu_compiler not found" in n and "apt-get install edgetpu-compiler" in n for n in result.notes)


@pytest.mark.slow
def test_edgetpu_report_names_the_first_op_that_falls_back(model_dir):
    fp32 = model_dir / "model_fp32.tflite"
    if not fp32.exists():
        export_model(model_dir / "model.keras", "tflite", "fp32", data="digits")
    report = compatibility_report(fp32)
    assert report.first_fallback is not None and report.first_fallback.index == 0
    assert "float32" in report.first_fallback.reason
    assert report.mapped == 0


COMPILER_STDOUT = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 1163 ms.

Input model: model_quant.tflite
Input size: 3.97MiB
Output model: model_quant_edgetpu.tflite
Output size: 4.48MiB
On-chip memory used for caching model parameters: 4.19MiB
On-chip memory remaining for caching model parameters: 3.03MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 33
Operation log: model_quant_edgetpu.log
See the operation log file for individual operation details.
Compilation child process completed within timeout period.
Compilation succeeded!
"""
COMPILER_LOG = """Edge TPU Compiler version 16.0.384591198
Input: model_quant.tflite
Output: model_quant_edgetpu.tflite

Operator                       Count      Status

ADD                            11         Mapped to Edge TPU
CONV_2D                        13         Mapped to Edge TPU
DEPTHWISE_CONV_2D              6          Mapped to Edge TPU
MEAN                           1          Mapped to Edge TPU
FULLY_CONNECTED                1          Mapped to Edge TPU
SOFTMAX                        1          More than one subgraph is not supported
"""


def test_compiler_output_is_parsed_into_the_report():
    parsed = parse_compiler_output(COMPILER_STDOUT, COMPILER_LOG)
    assert parsed["compiled"] and parsed["version"] == "16.0.384591198"
    assert parsed["on_chip_bytes"] == int(4.19 * 2**20) and parsed["off_chip_bytes"] == 0
    assert parsed["subgraphs"] == 1 and parsed["operations"] == 33
    assert parsed["mapped_ops"] == 32 and parsed["cpu_ops"] == 1
    assert parsed["ops"][-1] == {
        "op": "SOFTMAX",
        "count": 1,
        "status": "More than one subgraph is not supported",
        "mapped": False,
    }


@pytest.mark.slow
def test_edgetpu_compiler_on_path_is_run_and_its_output_kept(model_dir, tmp_path, monkeypatch):
    """A stand-in edgetpu_compiler (the real one is x86 Debian-only): edgex runs it, keeps *_edgetpu.tflite with
    metadata, parses its report, and never overwrites a compiled model without --force."""
    import os
    import sys

    (tmp_path / "stdout.txt").write_text(COMPILER_STDOUT)
    (tmp_path / "log.txt").write_text(COMPILER_LOG)
    stub = tmp_path / "bin" / "edgetpu_compiler"
    stub.parent.mkdir()
    stub.write_text(f"""#!{sys.executable}
import shutil, sys
from pathlib import Path
out_dir, model = Path(sys.argv[sys.argv.index("-o") + 1]), Path(sys.argv[-1])
shutil.copyfile(model, out_dir / (model.stem + "_edgetpu.tflite"))
(out_dir / (model.stem + "_edgetpu.log")).write_text(Path({str(tmp_path / "log.txt")!r}).read_text())
print(Path({str(tmp_path / "stdout.txt")!r}).read_text())
""")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub.parent}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "model_quant.tflite"
    result = export_model(model_dir / "model.keras", "edgetpu", data="digits", out=out)
    compiled = tmp_path / "model_quant_edgetpu.tflite"
    assert result.details["edgetpu_model"] == str(compiled) and compiled.exists()
    assert result.details["edgetpu"]["compiler"]["mapped_ops"] == 32
    assert read_metadata(compiled).class_names == tuple("0123456789")
    assert read_metadata(compiled).compiled_from == out.name
    assert not list(tmp_path.glob("*.compiling*"))
    compiled.write_bytes(b"compiled earlier")
    out.unlink()
    with pytest.raises(EdgexError, match=r"model_quant_edgetpu\.tflite already exists"):
        export_model(model_dir / "model.keras", "edgetpu", data="digits", out=out)
    assert compiled.read_bytes() == b"compiled earlier"


# -- errors ------------------------------------------------------------------------------------------------------
def test_existing_output_needs_force(model_dir, cli):
    out = model_dir / "exists.tflite"
    out.write_bytes(b"keep me")
    result = cli("convert", model_dir / "model.keras", "--to", "tflite", "--out", out)
    assert result.exit_code == 2 and "--force" in result.stderr
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda d: d / "missing.keras", "not found"),
        (lambda d: (d / "notes.txt").write_text("hello") and d / "notes.txt", "not a Keras model file"),
        (lambda d: (d / "page.keras").write_text("<html></html>") and d / "page.keras", "not a valid .keras file"),
    ],
)
def test_bad_model_files_are_one_line_errors(tmp_path, cli, make, fragment):
    result = cli("convert", make(tmp_path), "--to", "tflite")
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_truncated_keras_file_is_a_one_line_error(model_dir, tmp_path, cli):
    data = (model_dir / "model.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    result = cli("convert", tmp_path / "cut.keras", "--to", "onnx")
    assert result.exit_code == 2 and "cut.keras" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_corrupt_member_in_keras_archive_is_a_one_line_error(model_dir, tmp_path, cli):
    with zipfile.ZipFile(model_dir / "model.keras") as src, zipfile.ZipFile(tmp_path / "bad.keras", "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            dst.writestr(item, data[: len(data) // 3] if item.filename.endswith(".h5") else data)
    result = cli("convert", tmp_path / "bad.keras", "--to", "tflite")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_int8_without_data_calibrates_on_the_recorded_data_or_is_refused(model_dir, tmp_path, cli):
    out = tmp_path / "int8.tflite"
    result = cli("convert", model_dir / "model.keras", "--to", "tflite", "--precision", "int8", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert any(note.startswith("calibrated on digits, the data the model's metadata records") for note in data["notes"])
    meta = json.loads(out.with_name("int8.tflite.json").read_text())
    assert meta["calibration"] == {"samples": CALIBRATION_SAMPLES, "data": "digits"}
    assert meta["parity"]["inputs"] == "data"
    foreign = tmp_path / "foreign.keras"  # no metadata beside it: nothing recorded
    shutil.copy(model_dir / "model.keras", foreign)
    result = cli("convert", foreign, "--to", "tflite", "--precision", "int8", "--out", tmp_path / "f.tflite")
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        "error: int8 quantization needs calibration data, and foreign.keras records none (no metadata naming the "
        "data it was trained on): pass --data digits, an image folder or tfds:NAME"
    ]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--to", "coreml"], "'coreml' is not one of"),
        (
            ["--to", "onnx", "--precision", "fp16"],
            "precision 'fp16' is not available for onnx; choose one of: fp32, int8",
        ),
        (["--to", "edgetpu", "--batch", "dynamic", "--data", "digits"], "--batch 1"),
        (["--to", "onnx", "--precision", "int8", "--opset", "11", "--data", "digits"], "needs opset 13 or later"),
    ],
)
def test_unknown_format_or_precision_lists_the_valid_ones(model_dir, cli, args, fragment):
    result = cli("convert", model_dir / "model.keras", *args)
    assert result.exit_code == 2 and fragment in result.stderr


@pytest.mark.slow
def test_lambda_model_is_refused(tmp_path, cli):
    from devices.tfkeras import keras

    k = keras()
    model = k.Sequential(
        [k.Input((32, 32, 3)), k.layers.Lambda(lambda x: x + 1), k.layers.Flatten(), k.layers.Dense(3)]
    )
    model.save(tmp_path / "lambda.keras")
    result = cli("convert", tmp_path / "lambda.keras", "--to", "tflite")
    assert result.exit_code == 2 and "Lambda" in result.stderr


def test_an_op_the_target_cannot_express_is_named_with_its_layer(tmp_path, cli):
    from devices.tfkeras import keras

    k = keras()
    model = k.Sequential(
        [
            k.Input((32, 32, 3)),
            k.layers.Discretization(bin_boundaries=[0.0, 0.5], name="buckets"),
            k.layers.Flatten(),
            k.layers.Dense(3, activation="softmax"),
        ]
    )
    model.save(tmp_path / "buckets.keras")
    result = cli("convert", tmp_path / "buckets.keras", "--to", "onnx")
    assert result.exit_code == 2
    assert "cannot express op Bucketize (layer 'buckets'" in result.stderr


@pytest.mark.slow
def test_cli_json_output(model_dir, cli):
    result = cli(
        "convert",
        model_dir / "model.keras",
        "--to",
        "tflite",
        "--precision",
        "dynamic",
        "--data",
        "digits",
        "--force",
        "--json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["parity"]["passed"] and data["size_ratio"] < 0.5


# -- ONNX external data ------------------------------------------------------------------------------------------
@pytest.fixture
def onnx_with_external_data(model_dir, tmp_path):
    import onnx

    fp32 = model_dir / "model_fp32.onnx"
    if not fp32.exists():
        export_model(model_dir / "model.keras", "onnx", "fp32", data="digits")
    model = onnx.load(str(fp32))
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save_model(
        model, str(folder / "model.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=1024
    )

    def with_location(location: str):
        crafted = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        for tensor in crafted.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        path = folder / "crafted.onnx"
        onnx.save_model(crafted, str(path))
        return path

    return folder, with_location


def test_onnx_external_data_inside_the_folder_loads(onnx_with_external_data):
    folder, _ = onnx_with_external_data
    with devices.load_model(folder / "model.onnx") as model:
        assert model.predict(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 10)


@pytest.mark.parametrize(
    "location, fragment",
    [
        ("/etc/passwd", "absolute"),
        ("../outside.bin", "'..'"),
        ("sub/../../outside.bin", "'..'"),
    ],
)
def test_onnx_external_data_outside_the_folder_is_refused(onnx_with_external_data, location, fragment):
    _, craft = onnx_with_external_data
    with pytest.raises(ModelFileError, match=fragment):
        devices.load_model(craft(location))


def test_onnx_external_data_through_a_symlink_outside_is_refused(onnx_with_external_data, tmp_path):
    folder, craft = onnx_with_external_data
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 64)
    (folder / "link.bin").symlink_to(secret)
    with pytest.raises(ModelFileError, match="resolves outside"):
        devices.load_model(craft("link.bin"))


# -- the direct ONNX writer for large models ------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [{}, {"conv": "regular"}, {"intermediate_activation": "elu"}, {"residual": False}, {"include_top": False}],
    ids=["separable", "regular", "elu-ablation", "no-residual", "features"],
)
def test_direct_onnx_writer_matches_keras_and_tf2onnx(tmp_path, overrides):
    import numpy as np

    from converters.onnx_graph import keras_to_onnx
    from devices.tfkeras import keras
    from edgex.models import create_model

    keras().utils.set_random_seed(3)
    model = create_model("paper", input_size=71, classes=10, width=0.125, middle_blocks=1, **overrides)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # batch norm with non-trivial statistics, so that every weight matters
        if layer.__class__.__name__ == "BatchNormalization":
            shape = layer.get_weights()[0].shape
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, shape),
                    rng.normal(0, 0.2, shape),
                    rng.normal(0, 0.2, shape),
                    rng.uniform(0.5, 1.5, shape),
                ]
            )
    path = tmp_path / "m.keras"
    model.save(path)
    x = rng.uniform(-1, 1, (4, 71, 71, 3)).astype(np.float32)
    direct = convert(
        path, "onnx", "fp32", out=tmp_path / "direct.onnx", parity_inputs=x, onnx_writer="direct", batch="dynamic"
    )
    assert direct.details["onnx_writer"] == "direct" and direct.parity.max_abs_diff <= 1e-4
    via_tf2onnx = convert(
        path, "onnx", "fp32", out=tmp_path / "tf2onnx.onnx", parity_inputs=x, onnx_writer="tf2onnx", batch="dynamic"
    )
    with devices.load_model(direct.path) as a, devices.load_model(via_tf2onnx.path) as b:
        np.testing.assert_allclose(a.predict(x), b.predict(x), atol=1e-4)
    assert keras_to_onnx(model, 1).graph.input[0].name == "input"


def test_auto_writer_keeps_tf2onnx_for_small_and_foreign_models(tiny_artifacts):
    from converters.onnx import writer_for
    from converters.registry import ExportOptions

    source = __import__("converters").load_source(tiny_artifacts["keras"])
    assert writer_for(source, ExportOptions()) == "tf2onnx"
    assert writer_for(source, ExportOptions(onnx_writer="direct")) == "direct"


def test_direct_writer_names_unsupported_layers(tmp_path):
    from converters.onnx_graph import keras_to_onnx
    from devices.tfkeras import keras

    k = keras()
    model = k.Sequential([k.Input((8, 8, 3)), k.layers.Conv2D(4, 3), k.layers.UpSampling2D(name="up")])
    with pytest.raises(EdgexError, match=r"does not support: up \(UpSampling2D\)"):
        keras_to_onnx(model, 1)


@pytest.mark.slow
def test_a_conversion_repeated_in_one_process_reuses_the_converted_bytes(
    model_dir, digits, tmp_path, monkeypatch, fresh_conversions
):
    """The pipeline converts one model for several stages; the same source file and options convert once, while
    every export still writes its own file, metadata and parity check."""
    import converters.onnx
    import converters.tflite
    from converters import load_source

    calls = []
    for module, name in ((converters.tflite, "_convert_bytes"), (converters.onnx, "_tf2onnx_fp32")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    from devices.preprocess import XCEPTION

    source = load_source(model_dir / "model.keras")
    samples = XCEPTION.apply(digits.train.take(101, seed=1).arrays()[0])  # samples no other test calibrates with
    checks = XCEPTION.apply(digits.val.take(64, seed=0).arrays()[0])
    first = convert(source, "tflite", "int8", out=tmp_path / "a.tflite", calibration=samples, parity_inputs=checks)
    again = convert(
        load_source(model_dir / "model.keras"),
        "tflite",
        "int8",
        out=tmp_path / "b.tflite",
        calibration=samples.copy(),
        parity_inputs=checks,
    )
    assert calls == ["_convert_bytes"]
    assert (tmp_path / "a.tflite").read_bytes() == (tmp_path / "b.tflite").read_bytes()
    assert again.parity.passed and read_metadata(again.path).parity.samples == first.parity.samples
    # Other calibration samples are another model.
    convert(source, "tflite", "int8", out=tmp_path / "c.tflite", calibration=samples[::-1].copy(), parity_inputs=checks)
    assert calls == ["_convert_bytes"] * 2
    # The ONNX int8 (QDQ) route starts from the fp32 graph made for the fp32 export.
    convert(source, "onnx", "fp32", out=tmp_path / "m.onnx", opset=15)
    int8 = convert(
        source, "onnx", "int8", out=tmp_path / "m_int8.onnx", opset=15, calibration=samples, parity_inputs=checks
    )
    assert calls.count("_tf2onnx_fp32") == 1 and int8.parity.passed


@pytest.mark.slow
def test_a_changed_source_file_is_converted_again(model_dir, tmp_path):
    from converters import load_source
    from devices.tfkeras import keras

    path = tmp_path / "model.keras"
    shutil.copy(model_dir / "model.keras", path)
    before = convert(load_source(path), "tflite", "fp32", out=tmp_path / "before.tflite")
    model = keras().models.load_model(path)
    model.set_weights([w * 0.5 for w in model.get_weights()])
    model.save(path)
    after = convert(load_source(path), "tflite", "fp32", out=tmp_path / "after.tflite")
    assert before.parity.passed and after.parity.passed
    assert Path(before.path).read_bytes() != Path(after.path).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("signature", [True, False])
def test_tflite_signature_def_is_written_unless_declined(model_dir, tmp_path, signature):
    """Deployed files carry the serving SignatureDef; models made only to be timed may skip it (2-3x faster)."""
    from devices.litert import interpreter_module

    result = convert(model_dir / "model.keras", "tflite", "fp32", out=tmp_path / "m.tflite", signature=signature)
    assert result.parity.passed
    interpreter = interpreter_module().Interpreter(model_path=result.path)
    assert ("serving_default" in interpreter.get_signature_list()) is signature
