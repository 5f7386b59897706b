"""Mode 4: a slow or hung ``/verify`` (a verifier that sleeps an hour; one that spins the CPU forever).

Expected: a per-call deadline stops the work (the coroutine is cancelled at ``verify_timeout_s``; the CPU-bound
verifier runs in a killable process and is killed at its deadline); the row is recorded as ``timeout``; the
server's event loop stays responsive: the p99 latency of other requests to the same server is unchanged.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from tests.faults.tools.fleet import (
    FAULT_AGENT,
    FAULT_CONFIG,
    SCRIPTED_CONFIG,
    account,
    collect,
    percentile,
    start_fleet,
    weather_rows,
)

ENV = "faulty_env.resources_servers.faulty_env"
VERIFY_TIMEOUT_S = 2.0
CPU_DEADLINE_S = 1.0


INLINE_VERIFY = {"responses_create_params": {"input": "x"}, "fault": "cpu_inline",
                 "response": {"id": "r", "object": "response", "created_at": 0, "model": "m", "status": "completed",
                              "output": [], "tools": [], "tool_choice": "auto", "parallel_tool_calls": True}}


class Prober(threading.Thread):
    """Calls a cheap tool of the server every 20 ms and keeps each latency: the 'other traffic'."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples: list[tuple[float, float]] = []  # (monotonic start, seconds)
        self.errors = 0
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.halt.is_set():
                start = time.monotonic()
                try:
                    client.post(self.url + "/get_weather", json={"city": "probe"}).raise_for_status()
                    self.samples.append((start, time.monotonic() - start))
                except httpx.HTTPError:
                    self.errors += 1
                self.halt.wait(0.02)

    def p99_ms(self, since: float, until: float) -> float:
        return 1000 * percentile([s for t, s in self.samples if since <= t < until], 99)


def test_hung_and_cpu_bound_verify_are_cut_and_do_not_stall_the_server(tmp_path: Path, scenario) -> None:
    sc = scenario(4, "hung / CPU-bound /verify",
                  "cut at the per-call deadline, row recorded as timeout, other traffic p99 unchanged")
    args = ["-c", FAULT_CONFIG, "-c", SCRIPTED_CONFIG, f"++{ENV}.verify_timeout_s={VERIFY_TIMEOUT_S}",
            f"++{ENV}.cpu_deadline_s={CPU_DEADLINE_S}"]
    rows = weather_rows(24)
    for i in (0, 6):
        rows[i]["fault"] = "hang"
    for i in (3, 9, 12, 15):
        rows[i]["fault"] = "cpu"
    with start_fleet(tmp_path, args) as fleet:
        prober = Prober(fleet.url("faulty_env"))
        prober.start()
        try:
            time.sleep(0.5)  # warm-up (first connections), not part of the baseline
            base_start = time.monotonic()
            time.sleep(2.0)  # baseline
            fault_start = time.monotonic()
            out = tmp_path / "hung.jsonl"
            summary, error, wall = collect(fleet.head_url, rows, out, agent=FAULT_AGENT, num_samples_in_parallel=8,
                                           max_attempts=1, rollout_timeout_s=30, max_failure_rate=1.0)
            fault_end = time.monotonic()
            # Control: the same CPU-bound loop run inline in the event loop (what isolation avoids) must show up in
            # the probe's p99, or the probe could not have seen a stall either.
            time.sleep(0.5)
            inline_start = time.monotonic()
            httpx.post(fleet.url("faulty_env") + "/verify", json=INLINE_VERIFY, timeout=30)
            inline_end = time.monotonic() + 0.2
            time.sleep(0.3)
        finally:
            prober.halt.set()
            prober.join(10)
    acc = account(out, len(rows))
    base_p99 = prober.p99_ms(base_start, fault_start)
    fault_p99 = prober.p99_ms(fault_start, fault_end)
    inline_max = 1000 * max((d for t, d in prober.samples if inline_start - 0.1 <= t < inline_end), default=0.0)
    sc.observe(
        wall_s=wall, verify_timeout_s=VERIFY_TIMEOUT_S, cpu_deadline_s=CPU_DEADLINE_S, failure_classes=acc["classes"],
        succeeded=acc["succeeded"], lost=acc["lost"], duplicated=acc["duplicated"],
        p99_ms_baseline=base_p99, p99_ms_during_faults=fault_p99, probe_errors=prober.errors,
        probes=len(prober.samples), control_inline_cpu_max_ms=inline_max,
    )
    sc.check("the 6 hung/CPU rows are recorded as timeout", acc["classes"] == {"timeout": 6})
    sc.check("the 18 other rows succeed", acc["succeeded"] == 18 and acc["rewards"] == {1.0: 18})
    sc.check("rows lost == 0 and duplicated == 0", acc["lost"] == 0 and acc["duplicated"] == 0)
    sc.check("cut by the per-call deadlines, not the 30 s rollout deadline", wall < 20)
    # The bound tolerates CPU contention on a shared 2-core box (a one-off ~0.5 s scheduling blip was seen once in a
    # full-suite run, with ~100 probes p99 is the 2nd-worst sample); a blocked loop costs the full 1 s (the control).
    sc.check("other traffic p99 stays within max(3x baseline, baseline + 600 ms)",
             fault_p99 <= max(3 * base_p99, base_p99 + 600))
    sc.check("no probe failed", prober.errors == 0)
    sc.check("control: the probe does see a 1 s in-loop stall (>= 800 ms)", inline_max >= 800)
    sc.finish()
