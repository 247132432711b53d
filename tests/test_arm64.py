"""Issue: the Raspberry Pi path on arm64. Bundles for rpi4 run on an emulated Debian 12 arm64 userland (Raspberry Pi
OS Bookworm's base, Python 3.11, Cortex-A72) with the runtimes their README recommends, and agree with the x86 host;
a runtime that crashes does not take the runner down."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from converters.parity import FP32_TOLERANCE, check_parity
from devices.bench import results_from_json
from devices.bundle import safe_extract
from edgex.deploy import build_bundle

pytestmark = pytest.mark.arm64

# The newest ai-edge-litert that runs bundles on the emulated Cortex-A72 (2.2.0 and 2.3.0 crash there), and the
# tflite-runtime fallback; edgex.deploy.bundle.LITERT_BOUNDS says the same to the device.
LITERT = "ai-edge-litert==2.1.6"
TFLITE = "tflite-runtime==2.14.0"
SAMPLES = 8  # images predicted on both sides
_spec = importlib.util.spec_from_file_location("arm64_userland", Path(__file__).parent / "arm64" / "userland.py")
userland_module = sys.modules["arm64_userland"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(userland_module)

# Runs several `python -m devices` commands in one interpreter (an emulated start costs seconds): each command's
# exit code and standard output, as one JSON line.
DRIVER = """
import contextlib, io, json, sys
sys.path.insert(0, ".")
from devices.__main__ import main
found = {}
for name, argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    found[name] = [code, out.getvalue()]
print("RESULT " + json.dumps(found))
"""


def build_userland(folder: str | Path):
    """The userland these tests run on, built in ``folder``. conftest.py starts it in the background as the session
    starts (it is mostly downloading) and runs the tests that need it last."""
    return userland_module.build(folder, [LITERT, TFLITE], cpu="cortex-a72")


@pytest.fixture(scope="session")
def userland(userland_in_background):
    """Built once per session; EDGEX_ARM64_CACHE names a folder to keep it in between runs."""
    missing = userland_module.missing_tools()
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (apt-get install {' '.join(missing)}; .ci/run does)")
    try:
        return userland_in_background.result()
    except userland_module.NoMirror as exc:
        pytest.skip(str(exc))
    except userland_module.UserlandError as exc:
        pytest.fail(f"arm64 userland: {exc}")


@pytest.fixture(scope="module")
def bundles(tiny_artifacts, tmp_path_factory) -> dict[str, Path]:
    """fp32, dynamic-range and int8 bundles for a Raspberry Pi 4, unpacked, with sample images beside them."""
    from PIL import Image

    from edgex.artifacts.convert import export_model

    folder = tmp_path_factory.mktemp("rpi4")
    models = {
        "fp32": tiny_artifacts["tflite-fp32"],
        "int8": tiny_artifacts["tflite-int8"],
        "dynamic": Path(
            export_model(
                tiny_artifacts["keras"], "tflite", "dynamic", data="digits", out=folder / "model_dynamic.tflite"
            ).path
        ),
    }
    found = {}
    for precision, model in models.items():
        bundle = build_bundle(model, "rpi4", folder / f"{precision}.tar.gz", eval_data="digits", eval_samples=64)
        found[precision] = safe_extract(Path(bundle.path), folder / precision)
    images = np.load(found["int8"] / "eval" / "eval.npz")["images"][:SAMPLES]
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"sample{i}.png")
    return found


def _images(bundle: Path) -> list[str]:
    return [str(bundle.parent / f"sample{i}.png") for i in range(SAMPLES)]


def _commands(bundle: Path, *names: str) -> list:
    table = {
        "verify": ["verify"],
        "predict": ["predict", *_images(bundle), "--top", "10", "--json"],
        "eval": ["eval", "--json"],
        "bench": ["bench", "--json", "--runs", "3", "--warmup", "1", "--min-seconds", "0", "--max-seconds", "60"],
        "info": ["info", "--json"],
    }
    return [[name, table[name]] for name in names]


def _driven(done) -> dict:
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-2000:]
    return json.loads(lines[-1][len("RESULT ") :])


def _on_host(bundle: Path, *names: str) -> dict:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-B", "-c", DRIVER, json.dumps(_commands(bundle, *names))],
        cwd=bundle,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(bundle)},
    )
    return _driven(done)


def _on_arm64(userland, bundle: Path, runtime: str, *names: str) -> dict:
    done = userland.run(["-B", "-c", DRIVER, json.dumps(_commands(bundle, *names))], runtime=runtime, cwd=bundle)
    return _driven(done)


def _scores(predicted: str) -> np.ndarray:
    """predict --json --top 10 -> scores (images, classes) in class order."""
    rows = []
    for result in json.loads(predicted):
        scores = np.zeros(len(result["top"]), dtype=np.float32)
        for entry in result["top"]:
            scores[entry["index"]] = entry["score"]
        rows.append(scores)
    return np.stack(rows)


def _agree(host: dict, device: dict, precision: str) -> None:
    """Same top-1 on every sample, outputs within the precision's tolerance, the same accuracy on the eval set."""
    reference, emulated = _scores(host["predict"][1]), _scores(device["predict"][1])
    assert (reference.argmax(1) == emulated.argmax(1)).all()
    parity = check_parity(reference, emulated, precision, "bundled samples")
    assert parity.passed, parity
    if precision == "fp32":
        assert parity.max_abs_diff <= FP32_TOLERANCE
    if "eval" not in device:
        return
    host_eval, device_eval = json.loads(host["eval"][1]), json.loads(device["eval"][1])
    assert abs(host_eval["top1"] - device_eval["top1"]) <= 1 / host_eval["samples"] + 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "dynamic", "int8"])
def test_a_rpi4_bundle_runs_on_arm64_with_ai_edge_litert_and_agrees_with_the_host(userland, bundles, precision):
    bundle = bundles[precision]
    names = ("verify", "predict", "eval", "bench") + (("info",) if precision == "int8" else ())
    device = _on_arm64(userland, bundle, LITERT, *names)
    assert all(code == 0 for code, _ in device.values()), device
    assert "every file matches the manifest" in device["verify"][1]
    _agree(_on_host(bundle, "predict", "eval"), device, precision)
    (bench,) = results_from_json(json.loads(device["bench"][1]))
    assert bench.runtime_version == LITERT.replace("==", " ") and bench.latency.n >= 3
    assert bench.environment["machine"] == "aarch64" and bench.threads == 4
    if "info" in device:
        environment = json.loads(device["info"][1])["environment"]
        assert "bookworm" in environment["os"] and "NEON" in environment["cpu_features"]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_tflite_runtime_fallback_runs_the_models_it_can_load(userland, bundles, precision):
    bundle = bundles[precision]
    assert TFLITE.replace("==", "-") in (bundle / "requirements.txt").read_text().replace("==", "-")
    # predict only: tflite-runtime's fp32 kernels take minutes for the eval set under emulation (the crash test below
    # evaluates the int8 bundle with it).
    device = _on_arm64(userland, bundle, TFLITE, "predict")
    _agree(_on_host(bundle, "predict"), device, precision)


@pytest.mark.slow
def test_tflite_runtime_is_refused_up_front_for_a_model_that_needs_a_newer_runtime(userland, bundles):
    bundle = bundles["dynamic"]
    assert "# fallback: ai-edge-litert==1.4.0" in (bundle / "requirements.txt").read_text()
    done = userland.run(["-B", "-m", "devices", "eval"], runtime=TFLITE, cwd=bundle)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "tflite-runtime 2.14.0 is older than the LiteRT runtime 2.17.0 that model_dynamic.tflite needs" in line
    assert line.endswith("install the fallback requirements.txt names: pip install ai-edge-litert==1.4.0")


def _crashing_runtime(folder: Path) -> Path:
    """An ai_edge_litert whose interpreter kills its own process with SIGSEGV, as 2.3.0 does under emulation."""
    package = folder / "ai_edge_litert"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "interpreter.py").write_text(
        "import os, signal\n\nclass Interpreter:\n    def __init__(self, *args, **kwargs):\n"
        "        os.kill(os.getpid(), signal.SIGSEGV)\n"
    )
    info = folder / "ai_edge_litert-0.0.0+selfkill.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ai-edge-litert\nVersion: 0.0.0+selfkill\n")
    return folder


@pytest.mark.slow
def test_a_runtime_that_crashes_is_reported_and_the_runner_falls_back(userland, bundles, tmp_path):
    bundle = bundles["int8"]
    crashing = _crashing_runtime(tmp_path / "crashing")
    done = userland.run(["-B", "-m", "devices", "eval", "--json"], runtime=TFLITE, cwd=bundle, extra_path=(crashing,))
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert line == (
        "warning: ai-edge-litert 0.0.0+selfkill crashed (SIGSEGV) loading model_int8.tflite; "
        "running it with tflite-runtime 2.14.0"
    )
    host = json.loads(_on_host(bundle, "eval")["eval"][1])
    assert json.loads(done.stdout)["top1"] == pytest.approx(host["top1"], abs=1 / host["samples"] + 1e-9)


def test_a_crash_with_no_other_runtime_installed_names_the_fallback(bundles, tmp_path):
    import subprocess

    bundle = bundles["int8"]
    crashing = _crashing_runtime(tmp_path / "crashing")
    done = subprocess.run(
        [sys.executable, "-B", "-m", "devices", "predict", _images(bundle)[0]],
        cwd=bundle,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": f"{bundle}{os.pathsep}{crashing}"},
    )
    assert done.returncode == 2
    assert done.stderr == (
        "error: ai-edge-litert 0.0.0+selfkill crashed (SIGSEGV) loading model_int8.tflite; "
        "install the fallback requirements.txt names: pip install tflite-runtime==2.14.0 'numpy<2'\n"
    )


@pytest.mark.slow
def test_bad_input_on_the_device_gets_one_line_errors(userland, bundles, tmp_path):
    bundle = bundles["int8"]
    runtime = userland.wheels[TFLITE]
    no_runtime = tmp_path / "numpy_only"
    no_runtime.mkdir()
    for name in ("numpy", "numpy.libs", "PIL", "pillow.libs"):
        if (runtime / name).exists():
            (no_runtime / name).symlink_to(runtime / name)
    unreadable = tmp_path / "not_an_image.png"
    unreadable.write_text("not an image")
    tampered = tmp_path / "tampered"
    import shutil

    shutil.copytree(bundle, tampered)
    (tampered / "model" / "model_int8.tflite.json").write_text("{}")
    runs = {
        "image": userland.run(
            ["-B", "-m", "devices", "predict", str(unreadable), "--no-check"], runtime=TFLITE, cwd=bundle
        ),
        "runtime": userland.run(["-B", "-m", "devices", "eval"], runtime=None, cwd=bundle, extra_path=(no_runtime,)),
        "tampered": userland.run(["-B", "devices/bundle.py", "verify", "."], runtime=TFLITE, cwd=tampered),
    }
    expected = {
        "image": (2, f"error: cannot read image {unreadable}: cannot identify image file"),
        "runtime": (2, "error: no LiteRT runtime is installed: pip install -r requirements.txt"),
        "tampered": (1, "modified: model/model_int8.tflite.json (SHA-256 does not match the manifest)"),
    }
    for name, (code, start) in expected.items():
        assert runs[name].returncode == code and runs[name].stderr.startswith(start), runs[name].stderr
        assert "Traceback" not in runs[name].stderr


def test_the_debian_mirror_comes_from_the_machines_apt_configuration(tmp_path):
    """Issue 28: no host name in the code; deb822 .sources first-come, one-line lists, disabled and security-only
    entries skipped, and a machine without any gets NoMirror (the userland fixture skips with its reason)."""
    listed = tmp_path / "sources.list.d"
    listed.mkdir()
    (listed / "a-security.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\nComponents: main\n"
    )
    (listed / "b-off.sources").write_text(
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n"
    )
    (listed / "c-src.sources").write_text("Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n")
    with pytest.raises(userland_module.NoMirror, match="no Debian mirror is configured in"):
        userland_module.apt_mirror((listed, tmp_path / "sources.list"))
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb http://security.example/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one-line.example/debian/ bookworm main\n"
    )
    assert userland_module.apt_mirror((listed, tmp_path / "sources.list")) == "http://one-line.example/debian"
    (listed / "d-mirror.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
    )
    assert userland_module.apt_mirror((listed, tmp_path / "sources.list")) == "http://mirror.example/debian"
