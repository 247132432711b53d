"""The layer-level spectrum: `edgex sweep --input-size 299 --segments 1,2,4,8,C/8,C/4,C/2,C` on LiteRT and ONNX
Runtime, fp32 and int8. Prints the sum over the paper Xception's separable layers (each shape times its count) per
G, the middle-flow layer per G, and which runtimes left a grouped convolution off their optimized kernels.

    python benchmarks/spectrum_299.py [--out runs/spectrum_299] [--from runs/spectrum_299/sweep.json]"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SEGMENTS = "1,2,4,8,C/8,C/4,C/2,C"
MIDDLE = "19x19x728->728 k3"


def tables(rows: list[dict]) -> str:
    rows = [r for r in rows if r["variant"].startswith("segments:")]
    pairs = list(dict.fromkeys((r["runtime"], r["precision"]) for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    out = ["Sum over the separable layers of the network (p50 of each shape x its count):", ""]
    out += ["| segments | MACs | " + " | ".join(f"{r} {p} ms" for r, p in pairs) + " |"]
    out += ["|---|---:|" + "---:|" * len(pairs)]
    for variant in variants:
        chosen = [r for r in rows if r["variant"] == variant]
        macs = sum(r["macs"] * r["count"] for r in chosen if (r["runtime"], r["precision"]) == pairs[0])
        times = [
            sum(r["p50_ms"] * r["count"] for r in chosen if (r["runtime"], r["precision"]) == pair) for pair in pairs
        ]
        out.append(f"| {variant[9:]} | {macs / 1e9:.2f} G | " + " | ".join(f"{t:.1f}" for t in times) + " |")
    out += [
        "",
        f"The middle-flow layer {MIDDLE} (24 of the network's 34 separable layers): p50 ms (fraction of roof)",
        "",
    ]
    out += ["| segments | G | MACs | " + " | ".join(f"{r} {p}" for r, p in pairs) + " |"]
    out += ["|---|---:|---:|" + "---:|" * len(pairs)]
    for variant in variants:
        by_pair = {(r["runtime"], r["precision"]): r for r in rows if r["variant"] == variant and r["shape"] == MIDDLE}
        if by_pair:
            first = next(iter(by_pair.values()))
            cells = [
                f"{by_pair[p]['p50_ms']:.2f} ({by_pair[p]['roof_fraction']:.0%})" if p in by_pair else "-"
                for p in pairs
            ]
            out.append(
                f"| {variant[9:]} | {first['groups']} | {first['macs'] / 1e6:.0f} M | " + " | ".join(cells) + " |"
            )
    fallen = sorted(
        {f"{r['runtime']} {r['precision']}: {r['placement']}" for r in rows if "fallback: -" not in r["placement"]}
    )
    out += [
        "",
        "Placements with a fallback:" if fallen else "No fallback: every convolution ran on an optimized kernel.",
    ]
    out += [f"- {line}" for line in fallen]
    invalid = sum(not r["valid"] for r in rows)
    out += ["", f"{invalid} of {len(rows)} measurements flagged not valid (CV above 10% or too few runs)."]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/spectrum_299")
    parser.add_argument("--from", dest="existing", help="Print the tables of an existing sweep.json.")
    args = parser.parse_args()
    path = Path(args.existing) if args.existing else Path(args.out) / "sweep.json"
    if not args.existing:
        start = time.perf_counter()
        where = ("--runtime", "litert,onnxruntime", "--precision", "fp32,int8", "--out", args.out, "--force")
        command = [sys.executable, "-m", "edgex", "sweep", "--input-size", "299", "--segments", SEGMENTS, *where]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stderr)
        print(f"sweep wall time {time.perf_counter() - start:.0f} s")
    print(tables(json.loads(path.read_text())["rows"]))


if __name__ == "__main__":
    main()
