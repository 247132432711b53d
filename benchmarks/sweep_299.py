"""The sweep bar: `edgex sweep --input-size 299` for fp32 and int8 on LiteRT finishes in under 3 minutes on
2 cores. Prints the wall time of the whole command, the measured roofs and the separable speedups."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    out = Path(tempfile.mkdtemp(prefix="edgex-sweep-")) / "sweep"
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgex",
            "sweep",
            "--input-size",
            "299",
            "--precision",
            "fp32,int8",
            "--runtime",
            "litert",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(done.stderr)
    data = json.loads((out / "sweep.json").read_text())
    for roof in data["roofs"]:
        print(
            f"roof {roof['runtime']} {roof['precision']}: {roof['compute_gops']:.1f} G op/s, "
            f"{roof['bandwidth_gbs']:.1f} GB/s"
        )
    for s in data["speedups"]:
        print(
            f"{s['shape']:22} {s['precision']}: separable {s['measured_speedup']:5.2f}x faster "
            f"(theory {s['theoretical_speedup']:.2f}x, efficiency {s['efficiency']:.0%})"
        )
    print(f"{len(data['rows'])} layers; wall time {wall:.0f} s (bar: < 180 s); results in {out}")


if __name__ == "__main__":
    main()
