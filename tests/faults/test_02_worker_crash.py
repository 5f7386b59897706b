"""Mode 2: a resources server holding hundreds of sessions is SIGKILLed mid-rollout.

Expected: the rollouts it held end as typed, retryable failures (no hang, no silent reward 0 from a session that
landed on the replacement), in well under 30 s; the launcher restarts the server on the same socket; the collection
retries those rollouts, and every row ends exactly once with a correct reward.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from gymfleet.rollouts import RolloutFailure
from tests.faults.tools import procs
from tests.faults.tools.fleet import (
    FAULT_AGENT,
    FAULT_CONFIG,
    MODEL,
    SCRIPTED_CONFIG,
    account,
    collect,
    start_fleet,
    weather_rows,
)

ROLLOUTS = 300
LATENCY_MS = 800  # each rollout spends ~1.6 s in two model calls: the kill lands while sessions are open


def test_sigkill_of_a_resources_server_mid_rollout(tmp_path: Path, scenario) -> None:
    sc = scenario(2, "worker SIGKILL mid-rollout (300 sessions)",
                  "affected rollouts fail typed+retryable <30 s, server restarted, 0 lost/dup, no wrong rewards")
    args = ["-c", FAULT_CONFIG, "-c", SCRIPTED_CONFIG, f"++{MODEL}.latency_ms={LATENCY_MS}"]
    with start_fleet(tmp_path, args) as fleet:
        old = next(i for i in fleet.instances() if i["process_name"] == "faulty_env")
        failures: list[tuple[float, RolloutFailure]] = []
        killed: list[float] = []
        replaced_after: list[float | None] = []

        def replaced() -> bool:
            now = [i for i in fleet.instances() if i["process_name"] == "faulty_env"]
            return len(now) == 1 and now[0]["pid"] != old["pid"] and now[0]["status"] == "healthy"

        loaded = threading.Event()
        started: list[int] = [0]

        def kill_when_loaded() -> None:
            # Wait until many rollouts are in flight (not a fixed delay: a loaded machine starts them late), then
            # give them 1.2 s to seed their sessions and reach the model (800 ms per call).
            loaded.wait(60)
            time.sleep(1.2)
            killed.append(procs.kill(old["pid"]))
            replaced_after.append(procs.wait_for(replaced, 30))

        out = tmp_path / "crash.jsonl"
        killer = threading.Thread(target=kill_when_loaded, daemon=True)

        def recording(inner):  # type: ignore[no-untyped-def]
            async def dispatch(row):  # type: ignore[no-untyped-def]
                started[0] += 1
                if started[0] >= min(100, ROLLOUTS):
                    loaded.set()
                try:
                    return await inner(row)
                except RolloutFailure as exc:
                    failures.append((time.monotonic(), exc))
                    raise

            return dispatch

        killer.start()
        _, error, wall = collect(
            fleet.head_url, weather_rows(ROLLOUTS), out, agent=FAULT_AGENT, num_samples_in_parallel=ROLLOUTS,
            max_attempts=5, retry_backoff_base_s=1.0, retry_backoff_max_s=4.0, rollout_timeout_s=60,
            dispatch_wrapper=recording,
        )
        killer.join(40)
        kill_t = killed[0]
        new_pid = next(i["pid"] for i in fleet.instances() if i["process_name"] == "faulty_env")

    acc = account(out, ROLLOUTS)
    after_kill = [(t - kill_t, f) for t, f in failures if t >= kill_t]
    detect = max((dt for dt, _ in after_kill), default=0.0)
    sc.observe(
        affected=len(after_kill), classes=sorted({f.failure_class for _, f in after_kill}),
        time_to_detect_max_s=detect, time_to_replacement_s=replaced_after[0] if replaced_after else None, wall_s=wall,
        succeeded=acc["succeeded"], failed=acc["failed"], lost=acc["lost"], duplicated=acc["duplicated"],
        rewards=acc["rewards"], error=str(error) if error else None,
    )
    sc.check("the kill hit rollouts in flight (typed failures seen)", len(after_kill) > 0)
    sc.check("every failure is typed and retryable", all(f.retryable for _, f in after_kill))
    sc.check("affected rollouts failed within 30 s of the kill", detect < 30)
    sc.check("server restarted and re-registered (new pid)", bool(replaced_after) and replaced_after[0] is not None
             and new_pid != old["pid"])
    sc.check("rows lost == 0", acc["lost"] == 0)
    sc.check("rows duplicated == 0", acc["duplicated"] == 0)
    sc.check("no success with a wrong reward (session mis-routed to the replacement)",
             acc["rewards"] == {1.0: acc["succeeded"]})
    sc.check("every rollout eventually succeeded", acc["succeeded"] == ROLLOUTS)
    sc.finish()
