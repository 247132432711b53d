"""Issue: the devices runtime layer, `edgex bench --device`, `edgex devices`, evaluation of any format."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import devices
from devices.base import TensorInfo, dequantize, quantize
from devices.bench import BenchConfig, LatencyStats, benchmark, measure, results_from_json, results_to_json
from devices.errors import EdgexError, InputMismatch, ModelFileError
from devices.registry import RUNTIMES
from tests.conftest import ROOT, run_python

FLOAT_ARTIFACT = {"litert": "tflite-fp32", "onnxruntime": "onnx-fp32", "tensorflow": "keras"}


@pytest.fixture(scope="module")
def samples(digits):
    return digits.val.images[:32].astype(np.float32) / 127.5 - 1


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_every_runtime_loads_runs_and_agrees_with_the_others(tiny_artifacts, samples, runtime):
    reference = devices.load_model(tiny_artifacts["keras"], runtime="tensorflow").predict(samples)
    with devices.load_model(tiny_artifacts[FLOAT_ARTIFACT[runtime]], runtime=runtime, threads=1) as model:
        assert model.runtime == runtime and model.version
        assert model.inputs[0].shape[1:] == (32, 32, 3) and model.inputs[0].dtype == "float32"
        out = model.predict(samples)
    np.testing.assert_allclose(out, reference, atol=1e-4)


@pytest.mark.hardware
def test_every_accelerator_here_runs_the_model_and_agrees_with_the_cpu(tiny_artifacts, samples):
    """Each GPU or delegate found (an Edge TPU runs compiled models only: test_converters checks those files) runs
    the tiny model in each of its runtimes, and gives the CPU's answers."""
    found = [d for d in devices.available_devices() if d.kind not in ("cpu", "edgetpu")]
    if not found:
        pytest.skip("no GPU or delegate on this machine")
    for device in found:
        for runtime in device.runtimes:
            path = tiny_artifacts[FLOAT_ARTIFACT[runtime]]
            reference = devices.load_model(path, runtime=runtime, device="cpu").predict(samples)
            with devices.load_model(path, runtime=runtime, device=device.name) as model:
                np.testing.assert_allclose(model.predict(samples), reference, atol=1e-3, err_msg=device.name)


@pytest.mark.parametrize("artifact", ["tflite-int8", "onnx-int8"])
def test_quantized_models_take_float_in_and_give_float_out(tiny_artifacts, samples, artifact):
    with devices.load_model(tiny_artifacts[artifact]) as model:
        probabilities = model.predict(samples)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=0.05)


def test_quantize_and_dequantize_round_trip():
    info = TensorInfo(name="x", shape=(1, 4), dtype="int8", scale=0.5, zero_point=-3)
    q = quantize(np.array([[-100.0, -1.0, 0.26, 100.0]]), info)
    assert q.dtype == np.int8 and q.tolist() == [[-128, -5, -2, 127]]
    np.testing.assert_allclose(dequantize(q, info), [[-62.5, -1.0, 0.5, 65.0]])


def test_latency_statistics_by_hand():
    stats = LatencyStats.from_seconds([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert stats.n == 100 and stats.min == 1 and stats.max == 100
    assert stats.p50 == pytest.approx(50.5) and stats.p90 == pytest.approx(90.1)
    assert stats.mean == pytest.approx(50.5) and stats.cv == pytest.approx(stats.std / 50.5)
    # The 40th and 61st of 100 order statistics (1-based) bracket the median with 95% confidence; a
    # mean +- 1.96 sigma / sqrt(n) interval would be [44.8, 56.2].
    assert stats.median_ci95 == (40.0, 61.0)
    skewed = LatencyStats.from_seconds([0.010] * 90 + [0.500] * 10)  # 10% outliers do not move the median's CI
    assert skewed.median_ci95 == (10.0, 10.0)


def test_benchmark_reports_everything_and_flags_short_runs(tiny_artifacts):
    result = benchmark(tiny_artifacts["tflite-int8"], threads=1, config=BenchConfig(warmup=2, runs=20, min_seconds=0.1))
    assert result.latency.n >= 20 and result.timed_seconds >= 0.1
    assert result.load_ms > 0 and result.first_ms > 0 and result.peak_rss_mb > 0
    assert result.model_size_bytes > 0 and result.runtime == "litert" and result.threads == 1
    assert result.images_per_s == pytest.approx(1000 / result.latency.mean)
    assert result.environment["cpu"] and result.environment["cores"] >= 1
    short = benchmark(
        tiny_artifacts["tflite-int8"],
        config=BenchConfig(warmup=0, min_warmup_seconds=0, runs=10**9, min_seconds=5, max_seconds=0.05),
    )
    assert not short.valid
    assert any("runs before" in r for r in short.invalid_reasons)
    assert any("less than the 5 s minimum" in r for r in short.invalid_reasons)


@pytest.mark.slow
def test_bench_json_and_csv_share_one_schema_and_append(tiny_artifacts, tmp_path, cli):
    out_json, out_csv = tmp_path / "bench.json", tmp_path / "bench.csv"
    args = ["--runs", "5", "--min-seconds", "0.05", "--warmup", "1"]
    result = cli(
        "bench", tiny_artifacts["tflite-int8"], tiny_artifacts["onnx-fp32"], *args, "--json", out_json, "--csv", out_csv
    )
    assert result.exit_code == 0, result.output
    rows = results_from_json(json.loads(out_json.read_text()))
    assert [r.runtime for r in rows] == ["litert", "onnxruntime"]
    assert rows[0].extra["precision"] == "int8"
    lines = out_csv.read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("label,model,format,runtime")
    refused = cli("bench", tiny_artifacts["keras"], *args, "--json", out_json)
    assert refused.exit_code == 2 and "--append" in refused.stderr
    appended = cli("bench", tiny_artifacts["keras"], *args, "--json", out_json, "--csv", out_csv, "--append")
    assert appended.exit_code == 0, appended.output
    assert len(results_from_json(json.loads(out_json.read_text()))) == 3
    assert len(out_csv.read_text().splitlines()) == 4
    assert results_to_json(rows)["schema"] == "edgex.bench/1"


def test_bench_with_real_inputs(tiny_artifacts, cli):
    result = cli(
        "bench", tiny_artifacts["tflite-int8"], "--inputs", "data:digits", "--runs", "5", "--min-seconds", "0.05"
    )
    assert result.exit_code == 0, result.output
    assert "tflite" in result.stdout


def _corrupt(tmp_path, kind):
    if kind == "truncated":
        path = tmp_path / "cut.tflite"
        path.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 40)
    elif kind == "random":
        path = tmp_path / "random.tflite"
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "html":
        path = tmp_path / "page.onnx"
        path.write_text("<!doctype html><html><body>Not Found</body></html>")
    elif kind == "empty":
        path = tmp_path / "empty.onnx"
        path.write_bytes(b"")
    else:
        path = tmp_path / "missing.tflite"
    return path


@pytest.mark.parametrize("kind", ["truncated", "random", "html", "empty", "missing"])
def test_corrupt_model_files_never_crash_the_process(tmp_path, kind):
    path = _corrupt(tmp_path, kind)
    done = subprocess.run(
        [sys.executable, "-m", "edgex", "bench", str(path)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1


def test_truncated_real_model_is_refused(tiny_artifacts, tmp_path):
    for key, suffix in (("tflite-fp32", ".tflite"), ("onnx-fp32", ".onnx")):
        data = tiny_artifacts[key].read_bytes()
        path = tmp_path / f"half{suffix}"
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(ModelFileError):
            devices.load_model(path)


def test_a_keras_file_loads_from_memory_with_the_weights_keras_reads(tiny_artifacts):
    import importlib
    import zipfile

    from devices.tensorflow import load_keras_model
    from devices.tfkeras import keras

    path = tiny_artifacts["keras"]
    ours, theirs = load_keras_model(path), keras().models.load_model(path, compile=False)
    saving_lib = importlib.import_module("tf_keras.src.saving.saving_lib")
    assert saving_lib.zipfile is zipfile  # tf-keras reads its archives as before outside the load
    weights = list(zip(ours.get_weights(), theirs.get_weights()))
    assert len(weights) == len(theirs.get_weights()) and all(np.array_equal(a, b) for a, b in weights)


@pytest.mark.parametrize(
    "artifact, device, fragment",
    [
        ("onnx-fp32", "gpu", "available devices: cpu"),
        ("keras", "gpu:0", "available devices: cpu"),
        ("tflite-fp32", "edgetpu", "not compiled for the Edge TPU"),
        ("tflite-int8", "edgetpu:usb:0", "not compiled for the Edge TPU"),
        ("tflite-fp32", "delegate:/nonexistent/libdelegate.so", "cannot load delegate"),
        ("tflite-fp32", "npu", "unknown device 'npu'"),
        ("onnx-fp32", "edgetpu", "no runtime runs .onnx models on device 'edgetpu'"),
    ],
)
def test_absent_devices_give_one_clear_line(tiny_artifacts, cli, artifact, device, fragment):
    if device.startswith("gpu") and any(d.kind == "gpu" for d in devices.available_devices()):
        pytest.skip("this machine has a GPU")
    result = cli("bench", tiny_artifacts[artifact], "--device", device, "--runs", "1", "--min-seconds", "0")
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_edge_tpu_detection_and_options():
    from devices import edgetpu

    found = edgetpu.list_edge_tpus()
    assert isinstance(found, list)
    assert all(d["name"].startswith("edgetpu:") for d in found)
    assert edgetpu.delegate_options("edgetpu") == {}
    assert edgetpu.delegate_options("edgetpu:usb:0") == {"device": "usb:0"}
    assert edgetpu.delegate_options("edgetpu:pci") == {"device": "pci"}
    with pytest.raises(EdgexError):
        edgetpu.delegate_options("edgetpu:bluetooth")


def test_missing_runtime_names_the_pip_extra(tiny_artifacts):
    result = run_python(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'onnxruntime': raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edgex.cli import main\n"
        f"sys.exit(main(['bench', {str(tiny_artifacts['onnx-fp32'])!r}]))\n"
    )
    assert result.returncode == 2
    assert "onnxruntime is not installed: pip install 'edgex[runtime]'" in result.stderr


def test_input_mismatch_names_the_tensor(tiny_artifacts):
    with devices.load_model(tiny_artifacts["tflite-fp32"]) as model:
        with pytest.raises(InputMismatch, match=r"input '.*': expected shape \[1, 32, 32, 3\], got \[1, 28, 28, 3\]"):
            model.run([np.zeros((1, 28, 28, 3), np.float32)])
        with pytest.raises(InputMismatch, match="expected dtype float32, got int8"):
            model.run([np.zeros((1, 32, 32, 3), np.int8)])
        with pytest.raises(EdgexError, match="fixed batch of 1"):
            measure(model, BenchConfig(batch=4))


def test_devices_command_lists_the_cpu(cli):
    result = cli("devices", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    cpu = data["devices"][0]
    assert cpu["name"] == "cpu" and "litert" in cpu["runtimes"] and "onnxruntime" in cpu["runtimes"]
    assert data["environment"]["cores"] >= 1


@pytest.mark.parametrize("artifact", ["tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"])
def test_eval_runs_every_format_through_its_runtime(tiny_artifacts, cli, artifact):
    keras_acc = json.loads(cli("eval", tiny_artifacts["keras"], "--json").stdout)["top1"]
    result = cli("eval", tiny_artifacts[artifact], "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["runtime"] == ("litert" if "tflite" in artifact else "onnxruntime")
    assert abs(data["top1"] - keras_acc) <= (1e-9 if "fp32" in artifact else 0.02)
