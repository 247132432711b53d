"""Which LiteRT runtimes run edgex bundles on an emulated Raspberry Pi 4 (Cortex-A72, Debian 12 arm64: Raspberry Pi
OS Bookworm's base), and whether their outputs agree with the x86 host. Accuracy and agreement only: emulation says
nothing about speed (a Pi's timing comes from edgex deploy --ssh).

For the tiny preset trained on the digits, exported fp32, dynamic-range and int8, bundled for rpi4 with 256
validation images: per runtime, what `python -m devices check` reports, top-1 on those images, top-1 agreement with
the host (ai-edge-litert on x86-64) and the largest difference of the outputs (probabilities).

Usage: python -m benchmarks.arm64_emulated CACHE [REQUIREMENT ...]   (default: the ai-edge-litert versions tested
and tflite-runtime 2.14.0; CACHE keeps the userland between runs)
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RUNTIMES = [
    "ai-edge-litert==1.4.0",
    "ai-edge-litert==2.0.3",
    "ai-edge-litert==2.1.6",
    "ai-edge-litert==2.2.0",
    "ai-edge-litert==2.3.0",
    "tflite-runtime==2.14.0",
]
# Every validation image of the bundle through the model, in the bundle folder: the scores go to a .npy file.
SCORES = """
import json, sys
import numpy as np
sys.path.insert(0, ".")
import devices
from devices.metadata import read_metadata
manifest = json.load(open("manifest.json"))
model = devices.load_model(manifest["model"], threads=manifest["defaults"]["threads"])
data = np.load(manifest["eval"])
x = read_metadata(manifest["model"]).input_preprocessing.apply(data["images"])
np.save(sys.argv[1], model.predict(x))
"""


def _userland_module():
    path = Path(__file__).resolve().parents[1] / "tests" / "arm64" / "userland.py"
    spec = importlib.util.spec_from_file_location("arm64_userland", path)
    module = sys.modules["arm64_userland"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bundles(work: Path) -> dict[str, Path]:
    from devices.bundle import safe_extract
    from edgex.artifacts.convert import export_model
    from edgex.deploy import build_bundle
    from edgex.training.trainer import TrainConfig, train

    model = Path(train(TrainConfig(preset="tiny", epochs=5), work / "train").model_path)
    found = {}
    for precision in ("fp32", "dynamic", "int8"):
        exported = export_model(model, "tflite", precision, data="digits").path
        bundle = build_bundle(exported, "rpi4", work / f"{precision}.tar.gz", eval_data="digits", eval_samples=256)
        found[precision] = safe_extract(Path(bundle.path), work / precision)
    return found


def _row(userland, bundle: Path, runtime: str, host, labels) -> str:
    import numpy as np

    check = userland.run(["-B", "-m", "devices", "check", "--json"], runtime=runtime, cwd=bundle, timeout=600)
    report = json.loads(check.stdout)
    if not report["ok"]:
        return report["line"]
    out = bundle / f"scores-{runtime}.npy"
    done = userland.run(["-B", "-c", SCORES, str(out)], runtime=runtime, cwd=bundle, timeout=900)
    if done.returncode != 0:
        return f"scores failed: {done.stderr.strip().splitlines()[-1:]}"
    scores = np.load(out)
    top1 = float((scores.argmax(1) == labels).mean())
    agreement = float((scores.argmax(1) == host.argmax(1)).mean())
    diff = float(np.abs(scores.astype(np.float64) - host).max())
    return f"top-1 {100 * top1:.2f}%, agreement with the host {agreement:.1%}, max |diff| {diff:.2g}"


def main() -> None:
    import numpy as np

    if len(sys.argv) < 2:
        sys.exit(__doc__)
    module = _userland_module()
    runtimes = sys.argv[2:] or RUNTIMES
    userland = module.build(sys.argv[1], runtimes, cpu="cortex-a72")
    work = Path(tempfile.mkdtemp(prefix="edgex-arm64-"))
    for precision, bundle in _bundles(work).items():
        host_file = bundle / "scores-host.npy"
        subprocess.run([sys.executable, "-B", "-c", SCORES, str(host_file)], cwd=bundle, check=True)
        host, labels = np.load(host_file).astype(np.float64), np.load(bundle / "eval" / "eval.npz")["labels"]
        print(f"{precision}: host top-1 {100 * float((host.argmax(1) == labels).mean()):.2f}% on {len(labels)} images")
        for runtime in runtimes:
            print(f"  {runtime}: {_row(userland, bundle, runtime, host, labels)}", flush=True)


if __name__ == "__main__":
    main()
