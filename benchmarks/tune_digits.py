"""Issue 25's target for `edgex tune`: on the digits with the `mini` preset at 32 px, the winner is at least 2x
faster than the default int8 artifact (`edgex quantize --mode int8`, LiteRT), both at the winner's thread count
and measured interleaved in one run; its held-out top-1 is within 1 point of the float model's; the tune fits a
15-minute budget on 2 cores.

    python -m benchmarks.tune_digits [FOLDER] [--budget 15m] [--max-drop 1]
    python -m benchmarks.tune_digits FOLDER --preset paper --epochs 2 --levers resolution --budget 40m

The second form is the paper-scale figure: the paper Xception at 299 px trained on the digits (10 classes).

Every step is the CLI as a user types it, in a fresh process: train, quantize, tune, and an independent
`edgex bench --interleave` of the default int8 artifact against the winner at the winner's threads. Prints the
CPU's ISA features, each figure, and whether each target holds (exit 1 when one does not).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def edgex(*args: str) -> tuple[str, float]:
    """Run `edgex ARGS` in a fresh process; its standard output and wall time."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "edgex", *args], capture_output=True, text=True)
    if done.returncode not in (0, 3):
        sys.exit(f"edgex {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help="work folder (default: a temporary one)")
    parser.add_argument("--budget", default="15m")
    parser.add_argument("--max-drop", default="1")
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--epochs", default="20", help="training epochs of the model to tune")
    parser.add_argument("--levers", default="drop-blocks,prune,resolution,student")
    args = parser.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="edgex-tune-digits-"))
    from devices.sysinfo import cpu_features, cpu_model

    print(f"CPU: {cpu_model()} ({', '.join(cpu_features())}); folder {folder}")
    model = folder / args.preset / "model.keras"
    if not model.is_file():
        train = (
            "train",
            "--data",
            "digits",
            "--preset",
            args.preset,
            "--epochs",
            args.epochs,
            "--out",
            str(model.parent),
        )
        _, seconds = edgex(*train)
        print(f"trained {args.preset} in {seconds:.0f} s")
    default = folder / "int8" / "model_int8.tflite"
    if not default.is_file():
        edgex("quantize", str(model), "--mode", "int8", "--data", "digits", "--out", str(default.parent))
    output, seconds = edgex("tune", str(model), "--budget", args.budget, "--max-drop", args.max_drop, "--levers",
                            args.levers, "--out", str(folder / "tune"), "--force", "--json")  # fmt: skip
    report(json.loads(output), seconds, default, float(args.max_drop))


def report(result: dict, seconds: float, default: Path, max_drop: float) -> None:
    winner, counts = result["winner"], result["counts"]
    print(f"tune: {seconds:.0f} s wall for a {result['budget_s']:.0f} s budget; candidates {counts}")
    if winner is None:
        sys.exit("no winner: no candidate passed the gate on both splits")
    print(f"winner: trial {winner['trial']}, {winner['network']}, {winner['runtime']} {winner['precision']}, "
          f"{winner['threads']} thread(s), options {winner['options']}: {winner['artifact']}")  # fmt: skip
    drop = 100 * (result["float_heldout"] - winner["heldout_top1"])
    print(f"held-out top-1: winner {100 * winner['heldout_top1']:.2f}%, float {100 * result['float_heldout']:.2f}% "
          f"({drop:+.2f} points; {result['heldout_samples']} samples)")  # fmt: skip
    versus = winner["versus_default"]
    print(f"tune's own A/B: {versus['line']}")
    output, _ = edgex("bench", str(default), winner["artifact"], "--interleave", "--threads", str(winner["threads"]),
                      "--min-seconds", "2")  # fmt: skip
    line = next(line for line in output.splitlines() if "interleaved rounds" in line)
    print(f"independent A/B (edgex bench --interleave): {line}")
    ratio_low = float(line.split("[")[1].split(",")[0])
    checks = {
        "winner >= 2x faster than the default int8 (interval's low end)": min(ratio_low, versus["ci95"][0]) >= 2,
        f"held-out top-1 within {max_drop:g} point of the float model": drop <= max_drop,
        "the tune fits its budget": seconds <= result["budget_s"] + 120,  # Python, TensorFlow and model loading
    }
    for name, held in checks.items():
        print(f"{'MET' if held else 'NOT MET'}: {name}")
    if not all(checks.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
