"""Mode 11: a rate-limited upstream (a hosted API or a vLLM router answering 429 with ``Retry-After``).

The upstream serves 10 requests/s (token bucket) and answers 429 ``Retry-After: 1`` beyond; the collection demands
far more. Expected: capped exponential backoff with jitter that honours ``Retry-After`` (a retry never comes sooner,
and retries told the same value do not return in lockstep); a bounded number of attempts per call; the model
server's concurrency cap holds at the upstream; no retry storm (the upstream sees a request rate near its quota, not
a multiple of it); every rollout ends as a success or a typed ``rate_limited`` failure, never a reward-0 row.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from tests.faults.test_03_dead_upstream import OPENAI, openai_args
from tests.faults.tools.fleet import AGENT, account, collect, start_fleet, weather_rows
from tests.faults.tools.upstream import Upstream

QUOTA_PER_S = 10.0
RETRY_AFTER_S = 1.0
CAP = 4
ROLLOUTS = 40


def test_429_storm_is_absorbed_with_backoff_and_jitter(tmp_path: Path, scenario) -> None:
    sc = scenario(11, "rate-limited upstream (429 + Retry-After, quota 10 req/s)",
                  "retries >= Retry-After with jitter, <= 4 attempts per call, concurrency cap held, upstream rate "
                  "near quota (no storm), typed rate_limited failures only")
    with Upstream(rate_per_s=QUOTA_PER_S, retry_after_s=RETRY_AFTER_S, latency_s=0.05) as upstream:
        args = [*openai_args(upstream.base_url), f"++{OPENAI}.max_concurrent_requests={CAP}"]
        with start_fleet(tmp_path, args) as fleet:
            out = tmp_path / "ratelimited.jsonl"
            _, _, wall = collect(fleet.head_url, weather_rows(ROLLOUTS), out, agent=AGENT,
                                 num_samples_in_parallel=16, max_attempts=1, max_failure_rate=1.0)
            records = upstream.snapshot()
            # The quota collapses (0.2 req/s): calls exhaust their attempts; the collector must see rate_limited.
            upstream.rate_per_s = 0.2
            out2 = tmp_path / "exhausted.jsonl"
            collect(fleet.head_url, weather_rows(6), out2, agent=AGENT, num_samples_in_parallel=6, max_attempts=1,
                    max_failure_rate=1.0)
            exhausted = account(out2, 6)
    acc = account(out, ROLLOUTS)
    by_key: dict[str, list] = defaultdict(list)
    for rec in records:
        if rec.path.endswith("/responses"):
            by_key[rec.key].append(rec)
    gaps = []
    for recs in by_key.values():
        for earlier, later in zip(recs, recs[1:], strict=False):
            if earlier.status == 429:
                gaps.append(later.t - earlier.t)
    attempts = [len(recs) for recs in by_key.values()]
    duration = max(r.t for r in records) - min(r.t for r in records)
    rate = len(records) / duration if duration > 0 else float("inf")
    ratio_429 = sum(r.status == 429 for r in records) / len(records)
    sc.observe(upstream_requests=len(records), rate_req_per_s=rate, quota_req_per_s=QUOTA_PER_S,
               share_429=ratio_429, max_attempts_per_call=max(attempts), retry_gaps=len(gaps),
               min_retry_gap_s=min(gaps) if gaps else None, gap_stdev_s=statistics.pstdev(gaps) if gaps else None,
               max_in_flight_at_upstream=upstream.max_in_flight, wall_s=wall, succeeded=acc["succeeded"],
               failure_classes=acc["classes"], lost=acc["lost"], duplicated=acc["duplicated"],
               quota_collapsed_classes=exhausted["classes"], quota_collapsed_rewards=exhausted["rewards"])
    sc.check("the upstream did rate-limit (429s seen)", any(r.status == 429 for r in records))
    sc.check("every retry after a 429 waited >= Retry-After", bool(gaps) and min(gaps) >= RETRY_AFTER_S * 0.95)
    sc.check("retries are jittered (spread >= 20 ms)", len(gaps) > 1 and statistics.pstdev(gaps) >= 0.02)
    sc.check("<= 4 attempts per call", max(attempts) <= 4)
    sc.check(f"concurrency cap {CAP} held at the upstream", upstream.max_in_flight <= CAP)
    sc.check("no storm: upstream request rate <= 2x its quota", rate <= 2 * QUOTA_PER_S)
    sc.check("every rollout succeeded or failed typed rate_limited",
             set(acc["classes"]) <= {"rate_limited"} and acc["lost"] == 0 and acc["duplicated"] == 0)
    sc.check("0 reward-0 rows", acc["rewards"] in ({}, {1.0: acc["succeeded"]}))
    sc.check("most rollouts got through", acc["succeeded"] >= ROLLOUTS // 2)
    sc.check("quota collapsed: calls that exhausted their attempts reach the collector as rate_limited",
             exhausted["classes"].get("rate_limited", 0) > 0 and set(exhausted["classes"]) == {"rate_limited"}
             and exhausted["rewards"] in ({}, {1.0: exhausted["succeeded"]}))
    sc.finish()
