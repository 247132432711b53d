"""The model-level bar: `edgex compare --preset paper` produces the A/B table (Xception vs its regular twin)
for fp32 and int8 on LiteRT and ONNX Runtime. The paper-sized twin has 179 M parameters: this takes a while
(tens of minutes on 2 cores). Prints the table and the wall time."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    out = Path(tempfile.mkdtemp(prefix="edgex-compare-")) / "compare"
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgex",
            "compare",
            "--preset",
            "paper",
            "--threads",
            "2",
            "--no-breakdown",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(done.stderr)
    print((out / "summary.md").read_text())
    print(f"wall time {time.perf_counter() - start:.0f} s; results in {out}")


if __name__ == "__main__":
    main()
