"""The study bar: `edgex study activation` (none / ELU / ReLU, 3 seeds) and `edgex study spectrum` (G = 1 ... C,
3 seeds) on the digits, each in about 10 minutes on 2 CPU cores. Prints each study's accuracy table with 95%
intervals, what held of the paper's orderings, and the wall time of each command.

    python benchmarks/study_digits.py [--epochs 5] [--preset tiny] [--out runs/study_digits]

A rerun with the same --out reuses the finished trainings (each (variant, seed) is saved as it completes)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

STUDIES = {
    # The activation study times every runtime and precision; the spectrum (8 variants) LiteRT only, to stay
    # within the bar: `edgex sweep --segments` measures the spectrum's layers on both runtimes.
    "activation": ("--runtime", "litert,onnxruntime", "--precision", "fp32,int8"),
    "spectrum": ("--runtime", "litert", "--precision", "fp32,int8"),
}


def run(study: str, args: argparse.Namespace) -> None:
    out = Path(args.out) / study
    options = ("--seeds", str(args.seeds), "--epochs", str(args.epochs), "--preset", args.preset, "--data", "digits")
    command = [sys.executable, "-m", "edgex", "study", study, *options, "--out", str(out), *STUDIES[study]]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(done.stderr)
    result = json.loads((out / "study.json").read_text())
    print(f"## edgex study {study} ({args.preset}, {args.epochs} epochs, {args.seeds} seeds)\n")
    print("| variant | params | MACs | top-1 % (95% interval) | seeds |")
    print("|---|---:|---:|---|---|")
    for v in result["variants"]:
        low, high = v["top1_ci95"]
        interval = "-" if low is None else f"{100 * low:.1f} .. {100 * high:.1f}"
        seeds = ", ".join(f"{100 * a:.1f}" for a in v["top1"])
        print(f"| {v['name']} | {v['params']:,} | {v['macs'] / 1e6:.2f} M | {100 * v['top1_mean']:.1f} ({interval}) "
              f"| {seeds} |")  # fmt: skip
    print()
    for comparison in result["comparisons"]:
        print(f"- {comparison['sentence']}")
    print(
        f"\nwall time {wall:.0f} s (bar: about 600 s on 2 cores; a rerun reuses saved trainings); CPU {result['cpu']}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--out", default="runs/study_digits")
    parser.add_argument("--only", choices=sorted(STUDIES), help="Run one study.")
    args = parser.parse_args()
    for study in STUDIES:
        if args.only in (None, study):
            run(study, args)


if __name__ == "__main__":
    main()
