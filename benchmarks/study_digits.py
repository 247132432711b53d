"""The study bar: `edgex study activation` (none / ELU / ReLU, 3 seeds) and `edgex study spectrum` (G = 1 ... C,
3 seeds) on the digits, each in about 10 minutes on 2 CPU cores; `--only inception` runs the paper's own comparison
(Xception against keras.applications.InceptionV3, both at 75 px). Prints each study's accuracy table with 95%
intervals, what held of the paper's orderings, and the wall time of each command.

    python -m benchmarks.study_digits [--epochs 5] [--preset tiny] [--out runs/study_digits] [--only NAME]

A rerun with the same --out reuses the finished trainings (each (variant, seed) is saved as it completes)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_STUDIES = ("activation", "spectrum")
STUDIES = (*DEFAULT_STUDIES, "inception")  # inception: the paper preset at 75 px, its own default


def _row(variant: dict, pairs: list[tuple[str, str]]) -> str:
    low, high = variant["top1_ci95"]
    interval = "-" if low is None else f"{100 * low:.1f} .. {100 * high:.1f}"
    seeds = ", ".join(f"{100 * a:.1f}" for a in variant["top1"])
    train = sum(r["seconds"] for r in variant["runs"]) / len(variant["runs"])
    times = {(t["runtime"], t["precision"]): t for t in variant["latency"]}
    cells = []
    for pair in pairs:
        t = times.get(pair)
        cells.append("-" if not t or t["p50_ms"] is None else f"{t['p50_ms']:.3f}" + ("" if t["valid"] else "*"))
    top1 = f"{100 * variant['top1_mean']:.1f} ({interval})"
    costs = f"{variant['params']:,} | {variant['macs'] / 1e6:.2f} M"
    return f"| {variant['name']} | {costs} | {top1} | {seeds} | {train:.0f} | " + " | ".join(cells) + " |"


def run(study: str, args: argparse.Namespace) -> None:
    out = Path(args.out) / study
    options = ["--seeds", str(args.seeds), "--epochs", str(args.epochs), "--data", "digits"]
    if study != "inception":
        options += ["--preset", args.preset]
    command = [sys.executable, "-m", "edgex", "study", study, *options, "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(done.stderr)
    result = json.loads((out / "study.json").read_text())
    print(f"## edgex study {study} ({args.epochs} epochs, {args.seeds} seeds)\n")
    pairs = list(dict.fromkeys((t["runtime"], t["precision"]) for v in result["variants"] for t in v["latency"]))
    head = "| variant | params | MACs | top-1 % (95% interval) | seeds | train s / seed | "
    print(head + " | ".join(f"{r} {p} ms" for r, p in pairs) + " |")
    print("|---|---:|---:|---|---|---:|" + "---:|" * len(pairs))
    for v in result["variants"]:
        print(_row(v, pairs))
    print()
    for comparison in result["comparisons"]:
        print(f"- {comparison['sentence']}")
    print(
        "\n(* the timing's coefficient of variation was above 10%)"
        f"\nwall time {wall:.0f} s (bar: about 600 s on 2 cores; a rerun reuses saved trainings); CPU {result['cpu']}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--out", default="runs/study_digits")
    parser.add_argument("--only", choices=STUDIES, help="Run one study (inception runs only when asked).")
    args = parser.parse_args()
    for study in [args.only] if args.only else DEFAULT_STUDIES:
        run(study, args)


if __name__ == "__main__":
    main()
