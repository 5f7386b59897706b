"""Kill the collector at random moments, resume each time: no row lost, none duplicated."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson

from gymfleet.rollouts import OutputPaths

from .helpers import keys, make_rows, read_jsonl, write_jsonl

SCRIPT = Path(__file__).parent / "scripts" / "collect_with_random_latency.py"
TASKS = 300
EXPECTED = {(t, r) for t in range(TASKS) for r in range(2)}


def _start(input_path: Path, output: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as err:
        return subprocess.Popen(
            [sys.executable, str(SCRIPT), str(input_path), str(output)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def _assert_consistent(output: Path) -> list[tuple[int, int]]:
    """Complete lines only (a torn tail may exist until the next resume repairs it), no duplicates."""
    data = output.read_bytes() if output.exists() else b""
    complete = data[: data.rfind(b"\n") + 1]
    found = keys([orjson.loads(line) for line in complete.splitlines()])
    duplicates = [k for k, n in Counter(found).items() if n > 1]
    assert not duplicates, f"duplicate rollouts {duplicates[:5]}"
    assert set(found) <= EXPECTED
    return found


def test_sigkill_at_random_moments_then_resume(tmp_path: Path) -> None:
    input_path = write_jsonl(tmp_path / "input.jsonl", make_rows(TASKS))
    output = tmp_path / "out" / "rollouts.jsonl"
    log = tmp_path / "collector.log"
    seed = time.time_ns()
    rng = random.Random(seed)
    progress = []
    for i in range(12):
        before = output.stat().st_size if output.exists() else 0
        proc = _start(input_path, output, log)
        try:
            if i % 4 == 0:
                time.sleep(rng.uniform(0.0, 0.4))  # during start-up, scan or resume
            else:
                # Once this run is writing rows, kill it a random moment later.
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and proc.poll() is None:
                    if output.exists() and output.stat().st_size > before:
                        break
                    time.sleep(0.005)
                time.sleep(rng.uniform(0.0, 0.15))
        finally:
            _stop(proc)  # SIGKILL: no handler, no grace, no cleanup
        progress.append(len(_assert_consistent(output)))

    final = _start(input_path, output, log)
    try:
        assert final.wait(timeout=60) == 0, f"seed {seed}; log:\n{log.read_text()[-3000:]}"
    finally:
        _stop(final)
    rows = read_jsonl(output)
    assert Counter(keys(rows)) == Counter(EXPECTED), f"seed {seed}, progress {progress}"
    assert read_jsonl(OutputPaths.from_output(output).failures) == []
    # Kills really landed mid-run: some runs wrote rows, and none finished everything alone.
    assert progress[-1] < len(EXPECTED) and any(n > 0 for n in progress), progress


def test_sigterm_stops_gracefully_and_resume_completes(tmp_path: Path) -> None:
    input_path = write_jsonl(tmp_path / "input.jsonl", make_rows(TASKS))
    output = tmp_path / "out" / "rollouts.jsonl"
    log = tmp_path / "collector.log"
    proc = _start(input_path, output, log)
    try:
        deadline = time.monotonic() + 20
        while (not output.exists() or output.stat().st_size == 0) and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    finally:
        _stop(proc)
    assert "received SIGTERM" in log.read_text()
    partial = _assert_consistent(output)
    assert 0 < len(partial) < len(EXPECTED)
    assert output.read_bytes().endswith(b"\n")

    final = _start(input_path, output, log)
    try:
        assert final.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        _stop(final)
    assert Counter(keys(read_jsonl(output))) == Counter(EXPECTED)
