"""Grouped convolutions on a CPU without AVX-512 (issue 28), where no such machine is at hand: this Python run under
qemu-x86_64 with an AVX2-only CPU model (default Haswell: AVX2 and FMA, no AVX-512, no VNNI), which is what
TensorFlow's and oneDNN's CPU checks see. Prints, for TensorFlow imported alone and through edgex, whether oneDNN
is on and whether a grouped convolution has a gradient; ``--study`` also runs the issue's spectrum study.

    python -m benchmarks.avx2_emulated [--cpu Haswell] [--study FOLDER]

Emulation is slow: TensorFlow's import takes 30-40 s, and the study with three points (``--segments 1,2,C
--runtime ''``) 13 minutes on a 2-core EPYC. The ISA that /proc/cpuinfo shows stays the host's: edgex's own ISA
line is not emulated.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_ALONE = """
import json, os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf
from tensorflow.python.util._pywrap_util_port import IsMklEnabled
x, kernel = tf.ones([1, 4, 4, 4]), tf.ones([3, 3, 2, 4])
with tf.GradientTape() as tape:
    tape.watch([x, kernel])
    y = tf.nn.conv2d(x, kernel, 1, "SAME")
try:
    tape.gradient(y, [x, kernel])
    gradient = "computed"
except tf.errors.InvalidArgumentError as error:
    gradient = str(error).split("}}")[-1].split(" [Op:")[0].strip()
print(json.dumps({"onednn": bool(IsMklEnabled()), "grouped gradient": gradient}))
"""

_EDGEX = """
import json
from devices.tfkeras import grouped_convolution_path, onednn_enabled
print(json.dumps({"onednn": onednn_enabled(), "grouped gradient": grouped_convolution_path().describe()}))
"""

STUDY = ["study", "spectrum", "--seeds", "1", "--epochs", "1"]


def emulated(cpu: str, args: list[str], timeout: int) -> tuple[subprocess.CompletedProcess, float]:
    """``python ARGS`` under qemu-x86_64 with CPU model ``cpu``, oneDNN left to whoever runs inside."""
    qemu = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
    if qemu is None:
        raise SystemExit("qemu-x86_64 is not installed: apt-get install qemu-user-static")
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["PYTHONPATH"] = str(ROOT)
    start = time.perf_counter()
    done = subprocess.run([qemu, "-cpu", cpu, sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    return done, time.perf_counter() - start


def _probe(cpu: str, who: str, code: str) -> None:
    done, seconds = emulated(cpu, ["-c", code], timeout=900)
    if done.returncode != 0:
        print(f"{who}: failed ({done.stderr.strip().splitlines()[-1]})")
        return
    found = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{who}: oneDNN {'on' if found['onednn'] else 'off'}; {found['grouped gradient']} ({seconds:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", default="Haswell", help="qemu's CPU model (qemu-x86_64 -cpu help lists them)")
    parser.add_argument("--study", metavar="FOLDER", help="also run `edgex study spectrum --seeds 1 --epochs 1` here")
    parser.add_argument("--segments", help="the study's points (default: the study's own, 1,2,4,8,C/8,C/4,C/2,C)")
    parser.add_argument("--runtime", help="the study's latency runtimes ('' for none; default: the study's own)")
    args = parser.parse_args()
    print(f"emulated CPU: {args.cpu} (qemu-x86_64)")
    _probe(args.cpu, "TensorFlow alone", _ALONE)
    _probe(args.cpu, "TensorFlow through edgex", _EDGEX)
    if args.study:
        chosen = {"segments": args.segments, "runtime": args.runtime}
        study = STUDY + [f"--{name}={value}" for name, value in chosen.items() if value is not None]
        done, seconds = emulated(args.cpu, ["-m", "edgex", *study, "--out", args.study], timeout=14400)
        print(f"edgex {' '.join(study)}: exit {done.returncode} in {seconds:.0f} s")
        if done.returncode != 0:
            print(f"  {done.stderr.strip().splitlines()[-1]}")
            return
        for variant in json.loads((Path(args.study) / "study.json").read_text())["variants"]:
            print(f"  {variant['name']}: top-1 {variant['top1_mean']:.2%} (latencies under emulation say nothing)")


if __name__ == "__main__":
    main()
