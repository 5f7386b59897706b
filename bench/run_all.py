"""Run every benchmark, print their tables and write bench/results/*.json.

    python bench/run_all.py           # full run (minutes)
    python bench/run_all.py --quick   # smoke: tiny sizes, proves the scripts work (used by CI)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

FULL = [
    ["bench_startup.py", "--runs", "3"],
    ["bench_hop_limit.py", "--requests", "5000", "--concurrency", "1", "16", "64", "256"],
    ["bench_throughput.py", "--rows", "2000", "--concurrency", "1", "16", "64", "256", "--repeats", "3"],
    ["bench_registry.py", "--instances", "1000", "--seconds", "10"],
]
QUICK = [
    ["bench_startup.py", "--runs", "1"],
    ["bench_hop_limit.py", "--requests", "200", "--concurrency", "1", "16", "--repeats", "1"],
    ["bench_throughput.py", "--rows", "40", "--concurrency", "1", "16", "--repeats", "1"],
    ["bench_registry.py", "--instances", "50", "--seconds", "1"],
]
OPTIONAL = ["bench_local_model.py", "bench_ray_verify.py", "bench_10k.py"]  # run by hand: need extras / minutes


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    failures = 0
    for script, *rest in QUICK if args.quick else FULL:
        start = time.monotonic()
        proc = subprocess.run([sys.executable, str(HERE / script), *rest], cwd=HERE, timeout=1800)
        sys.stdout.write(f"[{script}: exit {proc.returncode}, {time.monotonic() - start:.1f}s]\n")
        failures += proc.returncode != 0
    present = [s for s in OPTIONAL if (HERE / s).exists()]
    if present:
        sys.stdout.write(f"not run here (run by hand): {', '.join(present)}\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
