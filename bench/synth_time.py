"""Median wall time of full `cdk synth` runs through the pinned CLI (what `make synth` does).

    python bench/synth_time.py --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CDK = ROOT / "node_modules" / ".bin" / "cdk"


def synth_once(outdir: str) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        [str(CDK), "synth", "--quiet", "--no-notices", "-o", outdir],
        cwd=ROOT, capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"error: cdk synth failed:\n{result.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="number of timed runs (default 5)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not CDK.exists():
        print("error: the pinned CDK CLI is missing; run `make setup` first", file=sys.stderr)
        return 2
    times = []
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory() as outdir:
            times.append(synth_once(outdir))
        print(f"run {run}/{args.runs}: {times[-1]:.2f} s", flush=True)
    print(f"median of {args.runs} full `cdk synth` runs: {statistics.median(times):.2f} s "
          f"(min {min(times):.2f} s, max {max(times):.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
