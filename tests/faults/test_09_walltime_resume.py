"""Mode 9: a walltime kill (SIGTERM at a random moment, SIGKILL shortly after, as Slurm does) then a resume.

Expected: no duplicate rows; no lost successes; rollouts in flight at the kill are collected again on resume, never
cached as reward 0; a torn last JSONL line is tolerated; attempt counts of failed rows are preserved (not retried
again past max_attempts); a changed dataset is refused unless forced.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests.faults.tools.fleet import (
    FAULT_AGENT,
    FAULT_CONFIG,
    MODEL,
    REPO,
    SCRIPTED_CONFIG,
    read_jsonl,
    start_fleet,
    weather_rows,
    write_rows,
)

TASKS = 40
REPEATS = 2
BROKEN = (7, 31)  # rows whose verifier needs a module missing on this node: fail every attempt
KILL_AFTER_TERM_S = 0.3  # Slurm's KillWait (30 s), shortened below the rollouts' duration


def _collect(head_url: str, data: Path, out: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    head = head_url.removeprefix("http://")
    argv = [sys.executable, "-m", "gymfleet.cli.main", "collect", "--head", head, "-a", FAULT_AGENT, "-i", str(data),
            "-o", str(out), "--num-repeats", str(REPEATS), "--concurrency", "8", "--quiet", "++max_attempts=2",
            "++retry_backoff_base_s=0.2", "++stop_grace_s=5", "++max_failure_rate=1.0", *extra]
    with open(log, "ab") as fh:
        return subprocess.Popen(argv, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen[bytes], timeout_s: float = 120) -> int | None:
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _keys(rows: list[dict]) -> list[tuple[int, int]]:
    return [(r["_ng_task_index"], r["_ng_rollout_index"]) for r in rows]


def test_sigterm_then_sigkill_then_resume(tmp_path: Path, scenario) -> None:
    sc = scenario(9, "walltime kill (SIGTERM, SIGKILL 0.3 s later) + resume",
                  "0 duplicates, 0 lost successes, in-flight re-dispatched (no reward-0 rows), torn line tolerated, "
                  "attempts preserved, changed dataset refused unless forced")
    rows = weather_rows(TASKS)
    for i in BROKEN:
        rows[i]["fault"] = "import_error"
    data = write_rows(tmp_path / "data.jsonl", rows)
    out = tmp_path / "out" / "rollouts.jsonl"
    failures = out.with_name("rollouts_failures.jsonl")
    log = tmp_path / "collect.log"
    rng = random.Random()
    with start_fleet(tmp_path, ["-c", FAULT_CONFIG, "-c", SCRIPTED_CONFIG, f"++{MODEL}.latency_ms=400"]) as fleet:
        first = _collect(fleet.head_url, data, out, log)
        target = rng.randint(10, 40)  # a random moment: after this many rows
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and first.poll() is None and len(read_jsonl(out)) < target:
            time.sleep(0.02)
        term_at = time.monotonic()
        os.killpg(first.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            first.wait(KILL_AFTER_TERM_S)
        killed = first.poll() is None
        if killed:  # the walltime is over: SIGKILL, mid-grace, whatever is in flight
            os.killpg(first.pid, signal.SIGKILL)
        code_first = _finish(first, 10)
        stopped_s = time.monotonic() - term_at
        before_ok = read_jsonl(out)
        before_failed = read_jsonl(failures)
        with open(out, "ab") as fh:  # the kill tore the last line (a filesystem without atomic appends)
            fh.write(b'{"_ng_task_index": 59, "_ng_rollout_index": 1, "reward": 0.0, "respo')
        resumed = _collect(fleet.head_url, data, out, log, "++resume_from_cache=true")
        code_resume = _finish(resumed)
        after_ok, after_failed = read_jsonl(out), read_jsonl(failures)
        # A changed dataset: refused, then accepted with force_resume.
        changed = write_rows(tmp_path / "data.jsonl", [*rows, *weather_rows(1)])
        refused = _collect(fleet.head_url, changed, out, log, "++resume_from_cache=true")
        code_refused = _finish(refused, 60)
        forced = _collect(fleet.head_url, changed, out, log, "++resume_from_cache=true", "++force_resume=true")
        code_forced = _finish(forced)
        forced_ok = read_jsonl(out)
    text = log.read_text(errors="replace")
    expected = {(t, r) for t in range(TASKS) for r in range(REPEATS)}
    ok_keys, failed_keys = Counter(_keys(after_ok)), Counter(_keys(after_failed))
    duplicates = sum(n - 1 for n in (ok_keys + failed_keys).values() if n > 1)
    lost_successes = set(_keys(before_ok)) - set(ok_keys)
    broken = {(t, r) for t in BROKEN for r in range(REPEATS)}
    attempts = {(r["_ng_task_index"], r["_ng_rollout_index"]): r["_ng_attempt_index"] for r in after_failed}
    sc.observe(rows_before_kill=len(before_ok), failed_before_kill=len(before_failed), sigkill_needed=killed,
               exit_first=code_first, stop_s=stopped_s, exit_resume=code_resume, succeeded=len(after_ok),
               failed=len(after_failed), duplicates=duplicates, lost_successes=len(lost_successes),
               exit_changed_dataset=code_refused, exit_forced=code_forced, rows_after_forced=len(forced_ok))
    sc.check("the kill landed mid-run", 0 < len(before_ok) < len(expected) - len(broken))
    sc.check("rows duplicated == 0", duplicates == 0)
    sc.check("successes lost == 0", not lost_successes)
    sc.check("every rollout accounted for after resume", set(ok_keys) | set(failed_keys) == expected)
    sc.check("no reward-0 rows (in-flight rollouts were re-dispatched, the torn line dropped)",
             all(r["reward"] == 1.0 for r in after_ok))
    sc.check("only the broken rows failed, typed environment_error",
             set(failed_keys) == broken and {r["_ng_failure_class"] for r in after_failed} == {"environment_error"})
    sc.check("attempt counts preserved (each broken row failed once, after its 2 attempts)",
             all(attempts[k] == 1 for k in broken) and all(n == 1 for n in failed_keys.values()))
    sc.check("torn tail repaired on resume", "torn line" in text)
    sc.check("changed dataset refused without force (exit 1, says why)",
             code_refused == 1 and "force_resume" in text)
    sc.check("forced resume accepted and collects the new row", len(forced_ok) == len(after_ok) + REPEATS)
    sc.finish()
