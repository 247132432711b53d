"""How long `edgex --help` and `edgex <cmd> --help` take (target: under 0.5 s on 2 cores), and that no
TensorFlow is imported for them. Prints the median of several runs per command."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

TARGET_S = 0.5
COMMANDS = [["--help"], ["train", "--help"], ["model", "summary", "--help"], ["bench", "--help"]]


def main(repeats: int = 7) -> None:
    for args in COMMANDS:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "edgex", *args], capture_output=True)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        status = f"exit {done.returncode}" if done.returncode else ("ok" if median < TARGET_S else "OVER TARGET")
        print(f"edgex {' '.join(args):<24} median {median:.3f} s  (min {min(times):.3f}, target {TARGET_S} s) {status}")
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from edgex.cli import main; main(['--help']); "
            "print('tensorflow imported:', 'tensorflow' in sys.modules)",
        ],
        capture_output=True,
        text=True,
    )
    print(probe.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
