"""The metadata next to every artifact: one typed record that round-trips, reads the files of earlier edgex
versions, and refuses unreadable or newer files with one line."""

from __future__ import annotations

import json
import shutil

import PIL.Image
import pytest

from converters.registry import CALIBRATION_SAMPLES
from devices.base import TensorInfo
from devices.errors import EdgexError
from devices.files import metadata_path
from devices.metadata import (
    METADATA_VERSION,
    ArtifactMetadata,
    CalibrationRecord,
    ConversionTiming,
    DatasetRecord,
    Parity,
    QuantizationRecord,
    SourceRecord,
    TrainingMetrics,
    read_metadata,
    write_metadata,
)
from devices.preprocess import PREPROCESSINGS

# What edgex wrote before the metadata had a version: a conversion's file and a training run's, key for key.
LEGACY_CONVERSION = {
    "kind": "tflite",
    "format": "tflite",
    "precision": "int8",
    "io": "uint8",
    "batch": "1",
    "created": "2025-01-02T03:04:05+00:00",
    "source": {"path": "runs/tiny/model.keras", "sha256": "ab" * 32, "kind": "keras"},
    "input_shape": [32, 32, 3],
    "class_names": list("0123456789"),
    "preprocessing": {"name": "xception", "scale": 1 / 127.5, "offset": -1.0, "resize": "bilinear", "channels": "rgb"},
    "model_config": {"classes": 10, "input_size": 32, "conv": "separable"},
    "dataset": {"spec": "digits", "classes": list("0123456789"), "train": 1438, "val": 359, "image_size": 32,
                "fingerprint": "f" * 16, "source": "scikit-learn load_digits", "val_split": 0.2, "seed": 0},
    "quantization": {
        "inputs": [{"name": "input", "shape": [1, 32, 32, 3], "dtype": "uint8", "scale": 0.0078, "zero_point": 128}],
        "outputs": [{"name": "out", "shape": [1, 10], "dtype": "uint8", "scale": 0.0039, "zero_point": 0}],
    },
    "parity": {"samples": 256, "inputs": "data", "max_abs_diff": 0.13, "mean_abs_diff": 0.002,
               "top1_agreement": 0.99, "criterion": "top-1 agreement >= 98%", "passed": True,
               "interval": [0.97, 1.0], "decided": False, "available": 256, "snr_db": 30.6, "cosine": 0.999,
               "top1_meaningful": True, "resolution": 0.0039, "notes": []},
    "notes": [],
    "versions": {"tensorflow": "2.21.0"},
    "converter": "tf.lite.TFLiteConverter (from a concrete function)",
    "parity_data": "digits",
    "calibration": {"samples": 100, "data": "digits"},
    "timing": {"loading_s": 0.5, "conversion_s": 2.0, "parity_s": 0.25},
}  # fmt: skip
LEGACY_TRAINING = {
    "kind": "keras",
    "created": "2025-01-02T03:04:05+00:00",
    "class_names": list("0123456789"),
    "input_shape": [32, 32, 3],
    "preprocessing": {"name": "xception", "scale": 1 / 127.5, "offset": -1.0, "resize": "bilinear", "channels": "rgb"},
    "preset": "tiny",
    "model_config": {"classes": 10, "input_size": 32, "conv": "regular"},
    "train_config": {"data": "digits", "preset": "tiny", "epochs": 5},
    "dataset": {"spec": "digits", "classes": list("0123456789"), "train": 1438, "val": 359, "image_size": 32,
                "fingerprint": "f" * 16, "source": "scikit-learn load_digits", "val_split": 0.2, "seed": 0},
    "seed": 0,
    "epochs": 5,
    "phases": [{"name": "train", "epochs": 5, "blocks": ["all"]}],
    "weights": None,
    "bn_statistics": {"kept": True, "val_top1_after": 0.9},
    "params": 12345,
    "metrics": {"val_top1": 0.9, "val_loss": 0.3, "history": {"loss": [1.0, 0.5]}, "train_seconds": 9.5},
    "versions": {"tensorflow": "2.21.0"},
}  # fmt: skip


def _full_metadata() -> ArtifactMetadata:
    tensor = TensorInfo(name="input", shape=(1, 32, 32, 3), dtype="int8", scale=0.5, zero_point=-3)
    return ArtifactMetadata(
        format="edgetpu",
        precision="int8",
        io="int8",
        batch="1",
        compiled_from="model_quant.tflite",
        created="2025-01-02T03:04:05+00:00",
        input_shape=(32, 32, 3),
        class_names=("cat", "dog"),
        preprocessing=PREPROCESSINGS["torch"],
        source=SourceRecord(path="model.keras", sha256="ab" * 32, kind="keras"),
        dataset=DatasetRecord(spec="photos", classes=("cat", "dog"), train=8, val=2, image_size=32, seed=3),
        model_config={"conv": "separable", "classes": 2},
        preset="tiny",
        weights={"from": "base.keras", "head_replaced": True},
        seed=3,
        epochs=4,
        params=1000,
        phases=({"name": "head", "blocks": ["predictions"]},),
        metrics=TrainingMetrics(val_top1=0.5, val_loss=0.7, history={"loss": [1.0]}, train_seconds=1.5),
        parity=Parity(
            samples=64,
            inputs="data",
            max_abs_diff=0.1,
            mean_abs_diff=0.01,
            top1_agreement=1.0,
            criterion="top-1 agreement >= 98%",
            passed=True,
            interval=(0.95, 1.0),
            snr_db=31.0,
            cosine=0.99,
            notes=("tie",),
            near_ties=2,
            near_tie_agreement=0.5,
            confident_agreement=1.0,
        ),
        quantization=QuantizationRecord(inputs=(tensor,), outputs=(tensor,)),
        calibration=CalibrationRecord(samples=100, data="photos"),
        timing=ConversionTiming(loading_s=0.1, conversion_s=0.2, parity_s=0.3),
        notes=("first", "second"),
        versions={"numpy": "2.0"},
        sections={"opset": 17, "edgetpu": {"mapped_ops": 3}},
    )


def test_a_full_metadata_round_trips_through_its_file(tmp_path):
    meta = _full_metadata()
    path = write_metadata(tmp_path / "model.tflite", meta)
    assert path == metadata_path(tmp_path / "model.tflite")
    assert read_metadata(tmp_path / "model.tflite") == meta
    data = json.loads(path.read_text())
    assert data["version"] == METADATA_VERSION and data["opset"] == 17 and "sections" not in data
    assert data["quantization"]["inputs"][0] == {
        "name": "input",
        "shape": [1, 32, 32, 3],
        "dtype": "int8",
        "scale": 0.5,
        "zero_point": -3,
    }


def test_an_artifact_without_metadata_reads_as_empty(tmp_path):
    meta = read_metadata(tmp_path / "model.tflite")
    assert meta == ArtifactMetadata() and meta.input_preprocessing == PREPROCESSINGS["xception"]
    assert meta.class_names_or_indices(3) == ("0", "1", "2")
    with pytest.raises(EdgexError, match="no metadata with class names"):
        meta.class_names_or_indices()
    assert write_metadata(tmp_path / "m.tflite", meta).read_text() == '{\n  "version": 1\n}\n'


@pytest.mark.parametrize("legacy", [LEGACY_CONVERSION, LEGACY_TRAINING], ids=["conversion", "training"])
def test_files_of_earlier_versions_load_and_keep_every_field(tmp_path, legacy):
    metadata_path(tmp_path / "model").write_text(json.dumps(legacy))
    meta = read_metadata(tmp_path / "model")
    assert meta.class_names == tuple("0123456789") and meta.input_shape == (32, 32, 3)
    assert meta.preprocessing == PREPROCESSINGS["xception"] and meta.dataset.seed == 0
    assert meta.conv == legacy["model_config"]["conv"]
    write_metadata(tmp_path / "again", meta)
    again = json.loads(metadata_path(tmp_path / "again").read_text())
    kept = {key: value for key, value in legacy.items() if key != "kind" and value not in (None, [], {})}
    if "parity" in kept:  # fields added to the parity record since: their defaults (near ties, issue 27)
        kept["parity"] = {**kept["parity"], "near_ties": 0, "near_tie_agreement": None, "confident_agreement": None}
    assert again == {"version": METADATA_VERSION, **kept}  # only the unread "kind" and empty fields are left out


def test_legacy_fields_are_typed():
    conversion = ArtifactMetadata.from_dict(LEGACY_CONVERSION)
    assert conversion.parity.interval == (0.97, 1.0) and conversion.parity.passed
    assert conversion.quantization.inputs[0] == TensorInfo(
        name="input", shape=(1, 32, 32, 3), dtype="uint8", scale=0.0078, zero_point=128
    )
    assert conversion.calibration == CalibrationRecord(samples=100, data="digits")
    assert conversion.timing.conversion_s == 2.0 and conversion.source.kind == "keras"
    assert conversion.sections == {"converter": LEGACY_CONVERSION["converter"], "parity_data": "digits"}
    training = ArtifactMetadata.from_dict(LEGACY_TRAINING)
    assert training.metrics == TrainingMetrics(
        val_top1=0.9, val_loss=0.3, history={"loss": [1.0, 0.5]}, train_seconds=9.5
    )
    assert training.phases[0]["blocks"] == ["all"] and training.weights is None and training.epochs == 5
    assert set(training.sections) == {"train_config", "bn_statistics"}


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "it holds a list, not a JSON object"),
        ('{"input_shape": "32x32"}', 'input_shape should be a list, got "32x32"'),
        ('{"class_names": ["a", 2]}', "class_names[1] should be a string, got 2"),
        ('{"parity": {"samples": 3}}', "parity lacks inputs"),
        ('{"preprocessing": {"channels": "gbr"}}', "unknown channel order 'gbr'"),
        ('{"version": "one"}', 'version should be a whole number, got "one"'),
    ],
)
def test_unreadable_metadata_is_one_line_naming_the_file(tmp_path, content, fragment):
    metadata_path(tmp_path / "model.tflite").write_text(content)
    with pytest.raises(EdgexError) as raised:
        read_metadata(tmp_path / "model.tflite")
    message = str(raised.value)
    assert fragment in message and str(metadata_path(tmp_path / "model.tflite")) in message
    assert "repair or delete" in message and "\n" not in message


def test_a_newer_version_is_refused(tmp_path):
    metadata_path(tmp_path / "model.tflite").write_text(json.dumps({"version": METADATA_VERSION + 1}))
    with pytest.raises(EdgexError, match=rf"version {METADATA_VERSION + 1}, newer than this edgex reads .*upgrade"):
        read_metadata(tmp_path / "model.tflite")


@pytest.mark.parametrize(
    "content, fragment",
    [('{"class_names": 7', "not valid JSON"), (json.dumps({"version": METADATA_VERSION + 1}), "upgrade edgex")],
    ids=["unreadable", "newer"],
)
@pytest.mark.parametrize("command", ["eval", "predict", "bench"])
def test_the_cli_refuses_such_metadata_with_exit_2_and_one_line(
    tiny_artifacts, tmp_path, cli, command, content, fragment
):
    model = tmp_path / "model_int8.tflite"
    shutil.copy(tiny_artifacts["tflite-int8"], model)
    metadata_path(model).write_text(content)
    image = tmp_path / "digit.png"
    PIL.Image.new("RGB", (32, 32)).save(image)
    args = {"eval": ["--data", "digits"], "predict": [image], "bench": ["--inputs", "data:digits"]}[command]
    result = cli(command, model, *args)
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr and str(metadata_path(model)) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_artifacts_of_a_run_carry_typed_metadata(tiny_artifacts):
    for name, path in tiny_artifacts.items():
        meta = read_metadata(path)
        assert meta.class_names == tuple("0123456789") and meta.input_shape == (32, 32, 3), name
        assert meta.preprocessing == PREPROCESSINGS["xception"] and meta.dataset.spec == "digits"
        raw = json.loads(metadata_path(path).read_text())
        assert raw["version"] == METADATA_VERSION and "kind" not in raw
        if name == "keras":
            assert meta.format is None and meta.preset == "tiny" and meta.metrics.val_top1 > 0.85
            continue
        to, precision = name.split("-")
        assert (meta.format, meta.precision, meta.io, meta.batch) == (to, precision, "float", "1")
        assert meta.parity.passed and meta.source.sha256 and meta.timing.conversion_s > 0
        assert meta.quantization.outputs[0].shape[-1] == 10
        calibrated = CalibrationRecord(samples=CALIBRATION_SAMPLES, data="digits")
        assert meta.calibration == (calibrated if precision == "int8" else None)
