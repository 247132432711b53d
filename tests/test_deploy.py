"""Issue: `edgex deploy` bundles, `edgex verify`, and benchmarks run on a device over SSH."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

from devices.bench import results_from_json
from devices.bundle import BundleError, safe_extract, verify
from edgex.deploy import DEPLOY_TARGETS, build_bundle, verify_bundle


@pytest.fixture(scope="module")
def bundle(tiny_artifacts, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "bundle.tar.gz"
    return build_bundle(tiny_artifacts["tflite-int8"], "rpi4", out, eval_data="digits", eval_samples=64)


def test_bundle_holds_everything_the_device_needs_and_no_tensorflow(bundle, tmp_path):
    root = safe_extract(Path(bundle.path), tmp_path / "b")
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["target"] == "rpi4" and manifest["defaults"] == {"threads": 4, "device": "cpu"}
    assert manifest["model"] == "model/model_int8.tflite" and manifest["eval"] == "eval/eval.npz"
    files = set(manifest["files"])
    assert {
        "model/model_int8.tflite",
        "model/model_int8.tflite.json",
        "devices/__main__.py",
        "README.md",
        "requirements.txt",
        "eval/eval.npz",
    } <= files
    requirements = (root / "requirements.txt").read_text()
    assert "ai-edge-litert" in requirements and "numpy" in requirements and "Pillow" in requirements
    assert "tflite-runtime" in requirements and "tensorflow" not in requirements.replace("tflite-runtime", "")
    assert "python -B -m devices predict" in (root / "README.md").read_text()
    assert verify(root) == []


@pytest.mark.parametrize("name", sorted(DEPLOY_TARGETS))
def test_every_target_builds_with_its_defaults(tiny_artifacts, tmp_path, name):
    result = build_bundle(tiny_artifacts["tflite-int8"], name, tmp_path / f"{name}.tar.gz")
    root = safe_extract(Path(result.path), tmp_path / "x")
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["defaults"]["threads"] == DEPLOY_TARGETS[name].cores
    if DEPLOY_TARGETS[name].coral:
        # Not compiled for the Edge TPU: the bundle says so and runs the int8 model on the CPU.
        assert any("not compiled for the Edge TPU" in n for n in result.notes)
        assert manifest["defaults"]["device"] == "cpu"
        assert "libedgetpu1-std" in (root / "README.md").read_text()
        assert (root / "install_edgetpu_runtime.sh").exists()


def test_coral_bundle_ships_the_compiled_model_when_there_is_one(tiny_artifacts, tmp_path):
    import shutil

    int8 = tmp_path / "model_quant.tflite"
    shutil.copy(tiny_artifacts["tflite-int8"], int8)
    # A compiled model is any .tflite named *_edgetpu.tflite next to it (edgetpu_compiler's convention).
    shutil.copy(tiny_artifacts["tflite-int8"], tmp_path / "model_quant_edgetpu.tflite")
    result = build_bundle(int8, "coral-devboard", tmp_path / "coral.tar.gz")
    root = safe_extract(Path(result.path), tmp_path / "x")
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["model"] == "model/model_quant_edgetpu.tflite"
    assert manifest["defaults"]["device"] == "edgetpu:pci"
    assert "model/model_quant.tflite" in manifest["files"] and not result.notes


@pytest.mark.slow
def test_entry_point_predicts_benchmarks_and_evaluates_without_tensorflow(bundle, tmp_path):
    from PIL import Image

    root = safe_extract(Path(bundle.path), tmp_path / "b")
    Image.new("L", (20, 20), 128).save(tmp_path / "digit.png")
    code = (
        "import sys, runpy\n"
        "for args in ([{img!r}, '--json'], ):\n"
        "    pass\n"
        "def run(*args):\n"
        "    sys.argv = ['devices', *args]\n"
        "    try:\n"
        "        runpy.run_module('devices', run_name='__main__', alter_sys=True)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code in (0, None), (args, exit.code)\n"
        "run('verify')\n"
        "run('predict', {img!r}, '--json')\n"
        "run('bench', '--runs', '5', '--min-seconds', '0.05', '--json')\n"
        "run('eval', '--json')\n"
        "import devices\n"
        "assert devices.__file__.startswith({root!r}), devices.__file__\n"
        "assert 'tensorflow' not in sys.modules\n"
    ).format(img=str(tmp_path / "digit.png"), root=str(root))
    import subprocess

    prelude = (
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'tf_keras', 'keras', 'edgex', 'converters'):\n"
        "            raise ImportError(f'{name} is blocked in this test')\n"
        "sys.meta_path.insert(0, _Block())\n"
        "sys.path.insert(0, '.')\n"
    )
    done = subprocess.run(
        [sys.executable, "-B", "-c", prelude + code], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    outputs = done.stdout
    assert '"class"' in outputs and '"schema": "edgex.bench/1"' in outputs and '"top1"' in outputs


def test_verify_names_a_tampered_file(bundle, tmp_path, cli):
    assert cli("verify", bundle.path).exit_code == 0
    with tarfile.open(bundle.path) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(tampered, "w:gz") as tar:
        for member, data in members:
            if member.name == "model/model_int8.tflite.json":
                data = data.replace(b'"class_names"', b'"class_namez"')
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    result = cli("verify", tampered)
    assert result.exit_code == 2
    assert "modified: model/model_int8.tflite.json" in result.stderr
    root = safe_extract(Path(bundle.path), tmp_path / "folder")
    (root / "extra.sh").write_text("rm -rf /\n")
    assert verify_bundle(root) == ["not in the manifest: extra.sh"]


def test_verify_catches_a_changed_manifest_and_stray_bytecode(bundle, tmp_path):
    root = safe_extract(Path(bundle.path), tmp_path / "b")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["defaults"]["threads"] = 64
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert verify(root) == ["modified: manifest.json (its fields do not match its digest)"]
    root = safe_extract(Path(bundle.path), tmp_path / "c")
    (root / "devices" / "__pycache__").mkdir()
    (root / "devices" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\x00evil")
    (problem,) = verify(root)
    assert problem.startswith("not in the manifest: devices/__pycache__/__init__.cpython-311.pyc")


def test_a_remote_step_that_hangs_times_out_in_one_line():
    from edgex.deploy.remote import _RemoteError, _run

    with pytest.raises(_RemoteError, match=r"^pi: timed out after 0.5 s during benchmarking$"):
        _run([sys.executable, "-c", "import time; time.sleep(10)"], "pi", "benchmarking", 0.5)


def _archive_with(tmp_path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    path = tmp_path / f"crafted_{abs(hash(member.name))}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda: tarfile.TarInfo("../escape.txt"), "'..'"),
        (lambda: tarfile.TarInfo("model/../../escape.txt"), "'..'"),
        (lambda: tarfile.TarInfo("/etc/cron.d/evil"), "absolute"),
        (lambda: _link("model/link", "/etc/passwd", tarfile.SYMTYPE), "symbolic link"),
        (lambda: _link("model/hard", "README.md", tarfile.LNKTYPE), "hard link"),
    ],
)
def test_crafted_archives_are_refused_before_anything_is_written(tmp_path, make, fragment, cli):
    archive = _archive_with(tmp_path, make())
    with pytest.raises(BundleError, match=fragment):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape.txt").exists()
    result = cli("verify", archive)
    assert result.exit_code == 2 and fragment in result.stderr


def _link(name, target, kind):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_deploy_refuses_keras_models_and_unknown_targets(tiny_artifacts, cli):
    result = cli("deploy", tiny_artifacts["keras"], "--target", "rpi4")
    assert result.exit_code == 2 and "convert" in result.stderr
    result = cli("deploy", tiny_artifacts["tflite-int8"], "--target", "jetson")
    assert result.exit_code == 2 and "'jetson' is not one of" in result.stderr


@pytest.mark.slow
@pytest.mark.network
def test_deploy_over_ssh_benchmarks_on_the_device_and_brings_results_back(ssh_server, tiny_artifacts, tmp_path, cli):
    out_json = tmp_path / "device.json"
    result = cli(
        "deploy",
        tiny_artifacts["tflite-int8"],
        "--target",
        "generic-x86_64",
        "--out",
        tmp_path / "bundle.tar.gz",
        "--ssh",
        ssh_server["host"],
        "--ssh-config",
        ssh_server["config"],
        "--remote-dir",
        str(tmp_path / "remote"),
        "--remote-python",
        sys.executable,
        "--eval-data",
        "digits",
        "--runs",
        "10",
        "--min-seconds",
        "0.1",
        "--json",
        out_json,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out_json.read_text())
    (row,) = results_from_json(data)
    assert row.runtime == "litert" and row.latency.n >= 10 and row.extra["host"] == "edgex-test"
    assert row.environment["cpu"] and row.extra["os"]
    (host,) = data["hosts"]
    assert host["ok"] and host["accuracy"]["top1"] > 0.5 and host["identity"]["environment"]["cores"] >= 1
    assert (tmp_path / "remote" / "bundle" / "manifest.json").exists()


@pytest.mark.slow
@pytest.mark.network
def test_failing_hosts_get_one_line_each_and_do_not_stop_the_others(ssh_server, tiny_artifacts, tmp_path, cli):
    bad_config = tmp_path / "ssh_config"
    text = Path(ssh_server["config"]).read_text()
    bad_config.write_text(
        text + "\nHost wrong-key\n  HostName 127.0.0.1\n"
        f"  Port {ssh_server['port']}\n  IdentityFile {tmp_path / 'nokey'}\n  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
        "\nHost closed-port\n  HostName 127.0.0.1\n  Port 1\n"
    )
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "nokey")], check=True)
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("edgex-test\nwrong-key  # a key the server does not know\nclosed-port\n")
    result = cli(
        "deploy",
        tiny_artifacts["tflite-int8"],
        "--target",
        "generic-x86_64",
        "--out",
        tmp_path / "b.tar.gz",
        "--hosts",
        hosts,
        "--ssh-config",
        bad_config,
        "--remote-dir",
        str(tmp_path / "remote"),
        "--remote-python",
        sys.executable,
        "--runs",
        "5",
        "--min-seconds",
        "0.05",
        "--json",
        tmp_path / "out.json",
    )
    assert result.exit_code == 1
    rows = {h["host"]: h for h in json.loads((tmp_path / "out.json").read_text())["hosts"]}
    assert rows["edgex-test"]["ok"]
    assert rows["wrong-key"]["error"].startswith("wrong-key: authentication failed")
    assert rows["closed-port"]["error"].startswith("closed-port: unreachable")
    assert all("\n" not in h["error"] for h in rows.values())


@pytest.mark.slow
@pytest.mark.network
def test_setup_creates_a_virtual_environment_on_the_device(ssh_server, tiny_artifacts, tmp_path):
    from edgex.deploy import SshOptions, deploy_remote

    bundle = build_bundle(tiny_artifacts["tflite-int8"], "generic-x86_64", tmp_path / "b.tar.gz")
    (result,) = deploy_remote(
        bundle,
        [ssh_server["host"]],
        remote_dir=str(tmp_path / "remote"),
        setup=True,
        runs=5,
        min_seconds=0.05,
        remote_python=sys.executable,
        opts=SshOptions(config=ssh_server["config"]),
    )
    assert result.ok, result.error
    assert (tmp_path / "remote" / "venv" / "bin" / "python").exists()
    # the model was loaded in a child process on the device before anything ran it
    assert result.runtime.startswith("ai-edge-litert ") and result.runtime.endswith(" runs it")


def test_requirements_bound_ai_edge_litert_with_reasons_and_name_a_fallback_the_model_can_use(tiny_artifacts, tmp_path):
    from devices.smoke import requirements_fallback
    from devices.tflite_schema import min_runtime_version, version_tuple
    from edgex.deploy.bundle import LITERT_BOUNDS, TFLITE_RUNTIME

    for target, machine in (("rpi4", "aarch64"), ("generic-x86_64", "x86_64")):
        bundle = build_bundle(tiny_artifacts["tflite-int8"], target, tmp_path / f"{target}.tar.gz")
        root = safe_extract(Path(bundle.path), tmp_path / target)
        lines = (root / "requirements.txt").read_text().splitlines()
        requirement = LITERT_BOUNDS[machine][0]
        index = lines.index(requirement)
        # every bound of the requirement has a comment above it saying why
        for bound in requirement.removeprefix("ai-edge-litert").split(","):
            assert any(line.startswith(f"# {bound}:") or f"; {bound}:" in line for line in lines[:index]), bound
        # the int8 model needs an older runtime than tflite-runtime's last release: that is its fallback
        needed = min_runtime_version(tiny_artifacts["tflite-int8"].read_bytes())
        assert needed and version_tuple(needed) <= version_tuple(TFLITE_RUNTIME[0])
        assert requirements_fallback(root) == "tflite-runtime==2.14.0 'numpy<2'"
        assert "pip install tflite-runtime==2.14.0 'numpy<2'" in (root / "README.md").read_text()
