"""The main job's bar: `edgex pipeline` with its defaults (digits, mini, cpu) finishes in under 5 minutes on a
2-core machine. Prints the wall time of the whole command and of each stage."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    out = Path(tempfile.mkdtemp(prefix="edgex-pipeline-")) / "run"
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "edgex", "pipeline", "--out", str(out)], capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    for stage in sorted((out / "stages").glob("*.json"), key=lambda p: p.stat().st_mtime):
        record = json.loads(stage.read_text())
        where = "  (in a second process, beside the stages above)" if record.get("background") else ""
        print(f"{stage.stem:10} {record['seconds']:6.1f} s{where}")
    print(f"wall time {wall:.0f} s (bar: < 300 s); report: {out / 'report.html'}")


if __name__ == "__main__":
    main()
