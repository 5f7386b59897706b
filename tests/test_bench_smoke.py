"""The benchmark scripts still work (quick mode; numbers are not checked here: speed lives in bench/)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(600)
def test_bench_quick_mode_runs():
    proc = subprocess.run([sys.executable, "bench/run_all.py", "--quick"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for table in ("startup", "hop rate", "throughput", "registry"):
        assert table in proc.stdout
