"""`edgex deploy` and `edgex verify`: bundles for a Raspberry Pi, a Coral or any Linux board; the benchmark run on
the device itself over SSH lives in edgex.deploy.remote."""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path

from devices.bundle import BundleError, safe_extract, verify, write_manifest
from devices.errors import EdgexError, choice_error
from devices.files import atomic_path, refuse_overwrite, utc_now
from devices.metadata import ArtifactMetadata, read_metadata, write_metadata
from devices.smoke import FALLBACK_PREFIX, requirements_fallback
from edgex.deploy.boards import DEPLOY_TARGETS, Bundle, Target

REPO = Path(__file__).resolve().parents[2]
CORAL_APT = [
    'echo "deb https://packages.cloud.google.com/apt coral-edgetpu-stable main" | '
    "sudo tee /etc/apt/sources.list.d/coral-edgetpu.list",
    "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | "
    "sudo gpg --dearmor -o /etc/apt/trusted.gpg.d/coral-edgetpu.gpg",
    "sudo apt-get update && sudo apt-get install -y libedgetpu1-std",
]


# ai-edge-litert versions that run bundles, per board architecture: (requirement, why each bound). The arm64 figures
# come from tests/test_arm64.py (an emulated Cortex-A72 running Debian 12, the base of Raspberry Pi OS Bookworm).
LITERT_BOUNDS = {
    "aarch64": (
        "ai-edge-litert>=1.4,<2.2",
        (
            ">=1.4: 1.4.0 is the oldest version the arm64 tests have run bundles with",
            "<2.2: 2.2.0 and 2.3.0 crash (SIGSEGV) building the interpreter on an emulated Cortex-A72 (qemu-user 7.2,",
            "Debian 12 arm64); 1.4.0, 2.0.3 and 2.1.6 run fp32, dynamic-range and int8 bundles there",
        ),
    ),
    "x86_64": (
        "ai-edge-litert>=1.4,<2.4",
        (">=1.4: the oldest version tested on arm64; <2.4: 2.3.0 is the newest version the tests have run",),
    ),
}
# tflite-runtime's last release, with the numpy it was built against: it loads models whose min_runtime_version is
# at most its own version (fp32 and int8 from TensorFlow 2.21, not dynamic-range: FULLY_CONNECTED v12 needs 2.17).
TFLITE_RUNTIME = ("2.14.0", "tflite-runtime==2.14.0 'numpy<2'")
LITERT_OLDEST_TESTED = "ai-edge-litert==1.4.0"


def litert_fallback(model: Path) -> tuple[str, str]:
    """(pip arguments of the fallback, why): tflite-runtime when it can load the model, else the oldest ai-edge-litert
    tested (another build than the one that failed)."""
    from devices.tflite_schema import min_runtime_version, version_tuple

    needed = min_runtime_version(model.read_bytes())
    version, requirement = TFLITE_RUNTIME
    if needed and version_tuple(needed) <= version_tuple(version):
        return (
            requirement,
            f"for images without ai-edge-litert wheels; it runs this model (needs a runtime >= {needed})",
        )
    return LITERT_OLDEST_TESTED, (
        f"tflite-runtime (last release {version}) cannot load this model: it needs a LiteRT runtime >= {needed or '?'}"
    )


def _requirements(model: Path, target: Target) -> str:
    lines = ["# Runtime for this bundle (no TensorFlow needed)."]
    if model.suffix == ".onnx":
        lines.append("onnxruntime>=1.17")
    else:
        requirement, why = LITERT_BOUNDS.get(target.machine, LITERT_BOUNDS["aarch64"])
        lines += [f"# {line}" for line in why] + [requirement]
    lines += ["numpy>=1.23", "Pillow>=9"]
    if model.suffix == ".tflite":
        fallback, why = litert_fallback(model)
        lines += [
            "# When every installed runtime crashes or refuses the model, python -m devices names this fallback,",
            "# and edgex deploy --setup installs it:",
            f"# {why}.",
            f"{FALLBACK_PREFIX} {fallback}",
        ]
    if target.coral:
        lines += ["# The Edge TPU runtime is a system package (libedgetpu1-std); see README.md."]
    return "\n".join(lines) + "\n"


def _readme(target: Target, model: str, notes: list[str], has_eval: bool, fallback: str = "") -> str:
    threads = f"--threads {target.cores}" if target.cores else ""
    lines = [
        f"# edgex bundle for {target.description}",
        "",
        f"Model: `{model}` (metadata next to it: classes, preprocessing, quantization).",
        "",
        "## Set up",
        "",
        "```bash",
        "python3 -m venv --system-site-packages venv && . venv/bin/activate",
        "pip install -r requirements.txt",
        "```",
    ]
    if fallback:
        lines += [
            "",
            "The runner loads the model in a child process first. If the runtime crashes there, it tries the next "
            "runtime installed and says which version crashed; when none works, install the fallback that "
            f"requirements.txt names: `pip install {fallback}`.",
        ]
    if target.coral:
        lines += ["", "The Edge TPU runtime (once, from Coral's apt repository):", "", "```bash", *CORAL_APT, "```"]
    lines += [
        "",
        "## Run",
        "",
        "`-B` keeps Python's bytecode caches out of the bundle, so that it stays verifiable.",
        "",
        "```bash",
        "python -B -m devices verify            # every file against manifest.json",
        "python -B -m devices predict image.jpg  # top classes",
        f"python -B -m devices bench {threads}".rstrip() + "      # latency statistics (--json for the edgex schema)",
    ]
    if has_eval:
        lines.append("python -B -m devices eval               # accuracy on the bundled validation images")
    lines += ["python -B -m devices info               # what this device is", "```"]
    if notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def _choose_model(model: Path, target: Target) -> tuple[list[Path], Path, list[str]]:
    """(files to ship, the one to run, notes) for a target."""
    notes = []
    if model.suffix not in (".tflite", ".onnx"):
        raise EdgexError(
            f"deploy takes a .tflite or .onnx model; convert {model.name} first "
            "(edgex convert MODEL --to tflite --precision int8 --data ..., or --to edgetpu for a Coral)"
        )
    if not model.is_file():
        raise EdgexError(f"model file not found: {model}")
    if target.coral:
        if model.suffix != ".tflite":
            raise EdgexError("a Coral target needs a full-integer .tflite model (edgex convert --to edgetpu)")
        from converters.registry import compiled_path

        compiled = model if model.stem.endswith("_edgetpu") else compiled_path(model)
        if compiled.is_file():
            cpu_version = model.with_name(model.name.replace("_edgetpu.tflite", ".tflite"))
            ship = [compiled] + ([cpu_version] if cpu_version.is_file() and cpu_version != compiled else [])
            return ship, compiled, notes
        notes.append(
            f"{model.name} is not compiled for the Edge TPU (no {compiled.name} next to it): the bundle "
            "runs the int8 model on the CPU. Compile it on an x86-64 host with edgetpu_compiler, then deploy "
            f"{compiled.name}."
        )
        return [model], model, notes
    return [model], model, notes


def _copy_devices_package(dest: Path) -> None:
    shutil.copytree(REPO / "devices", dest / "devices", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def build_bundle(
    model: str | Path,
    target: str,
    out: str | Path | None = None,
    *,
    eval_data: str | None = None,
    eval_samples: int = 256,
    threads: int | None = None,
    force: bool = False,
) -> Bundle:
    """Write ``bundle.tar.gz``: model, metadata, the devices package, entry point docs, requirements, manifest.
    ``threads``: the runner's default thread count (default: the board's cores)."""
    if target not in DEPLOY_TARGETS:
        raise choice_error("target", target, DEPLOY_TARGETS)
    spec = DEPLOY_TARGETS[target]
    model = Path(model)
    ship, primary, notes = _choose_model(model, spec)
    device = spec.device if not spec.coral or primary.stem.endswith("_edgetpu") else "cpu"
    out = Path(out) if out else model.with_name(f"{model.stem}_{target}_bundle.tar.gz")
    refuse_overwrite(out, force)
    meta = read_metadata(model)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bundle"
        (root / "model").mkdir(parents=True)
        for path in ship:
            shutil.copy2(path, root / "model" / path.name)
            write_metadata(root / "model" / path.name, read_metadata(path, missing=meta))
        _copy_devices_package(root)
        eval_file = None
        if eval_data:
            eval_file = "eval/eval.npz"
            _write_eval_set(root / eval_file, meta, eval_data, eval_samples)
        (root / "requirements.txt").write_text(_requirements(primary, spec))
        readme = _readme(
            spec, f"model/{primary.name}", notes, eval_file is not None, fallback=requirements_fallback(root)
        )
        (root / "README.md").write_text(readme)
        if spec.coral:
            (root / "install_edgetpu_runtime.sh").write_text("#!/bin/sh\nset -e\n" + "\n".join(CORAL_APT) + "\n")
        manifest = write_manifest(
            root,
            {
                "target": spec.name,
                "target_description": spec.description,
                "machine": spec.machine,
                "model": f"model/{primary.name}",
                "defaults": {"threads": threads or spec.cores, "device": device},
                "eval": eval_file,
                "created": utc_now(),
                "source_model": str(model),
                "notes": notes,
            },
        )
        with atomic_path(out, overwrite=True) as tmp_archive, tarfile.open(tmp_archive, "w:gz") as tar:
            for path in sorted(root.rglob("*")):
                tar.add(path, arcname=path.relative_to(root).as_posix(), recursive=False)
    return Bundle(
        path=str(out), target=spec.name, model=f"model/{primary.name}", files=manifest["files"], notes=tuple(notes)
    )


def _write_eval_set(path: Path, meta: ArtifactMetadata, data: str, samples: int) -> None:
    """Validation images at the model's input size, uint8, with labels: evaluation on the device needs no data."""
    import numpy as np

    from edgex.artifacts.accuracy import dataset_for

    if not meta.input_shape:
        raise EdgexError("--eval-data needs the model's metadata (input shape, classes) next to the model")
    dataset = dataset_for(meta, data, meta.input_shape[0])
    images, labels = dataset.val.take(samples, seed=0).arrays()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=images, labels=labels.astype(np.int64))


def verify_bundle(bundle: str | Path) -> list[str]:
    """Problems of a bundle (archive or folder): tampered, missing or extra files; unsafe archives raise."""
    bundle = Path(bundle)
    if not bundle.exists():
        raise EdgexError(f"bundle not found: {bundle}")
    try:
        if bundle.is_dir():
            return verify(bundle)
        with tempfile.TemporaryDirectory() as tmp:
            return verify(safe_extract(bundle, Path(tmp) / "bundle"))
    except BundleError as exc:
        raise EdgexError(str(exc)) from exc
