"""Mode 5: thousands of concurrent rollouts against one host (``bench/bench_10k.py`` at reduced size).

Every rollout makes two model calls of 1 s each (ideal wall ~2 s). Expected: the first rollout answers within 5 s
(no httpx-style 40-minute stall); the collector's resident tasks stay bounded by its admission; every process stays
below its open-file limit; the client pool's wait time is exported as a metric; nothing is lost.

The CI runs 200 rollouts (a shared 2-core box: every hop is CPU work, so the first answer waits for the first wave
of all of them); ``pytest tests/faults/test_05_concurrency.py -m slow`` runs 10,000 (and
``python bench/bench_10k.py`` is the benchmark with the full table).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gymfleet import transport
from gymfleet.client import ServerClient
from gymfleet.rollouts import CollectionConfig, RolloutCollector, make_dispatch
from tests.faults.tools.fleet import REPO, account, start_fleet


@contextlib.contextmanager
def _bench() -> Iterator[Any]:
    """``bench/bench_10k.py`` as a module (its imports expect ``bench/`` on the path)."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        yield importlib.import_module("bench_10k"), importlib.import_module("bench_throughput")
    finally:
        sys.path.remove(str(REPO / "bench"))


def _soft_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 0


async def _collect(head_url: str, dataset: Path, out: Path, n: int) -> dict[str, float]:
    host, port = head_url.removeprefix("http://").rsplit(":", 1)
    client = ServerClient.load_from_global_config({"host": host, "port": int(port)})
    config = CollectionConfig.from_mapping({
        "agent_name": "example_single_tool_call_simple_agent", "input_jsonl_fpath": str(dataset),
        "output_jsonl_fpath": str(out), "num_samples_in_parallel": n, "quiet": True, "disable_aggregation": True,
        "rollout_timeout_s": 600,
    })
    inner = make_dispatch(client)
    seen = {"first_s": None, "max_tasks": 0}
    start = time.monotonic()

    async def dispatch(row: dict[str, Any]) -> dict[str, Any]:
        result = await inner(row)
        if seen["first_s"] is None:
            seen["first_s"] = time.monotonic() - start
        return result

    async def count_tasks() -> None:  # sampled: asyncio.all_tasks() is O(tasks), too dear to call per rollout
        while True:
            seen["max_tasks"] = max(seen["max_tasks"], len(asyncio.all_tasks()))
            await asyncio.sleep(0.1)

    counter = asyncio.create_task(count_tasks())
    try:
        summary = await RolloutCollector(config, dispatch).run(handle_signals=False)
    finally:
        counter.cancel()
        await transport.close_sessions()
    return {"wall_s": time.monotonic() - start, "retried": summary.retried, **seen}


def _run(tmp_path: Path, scenario: Any, n: int, workers: int) -> None:
    sc = scenario(5, f"{n} concurrent rollouts against one host",
                  "first response < 5 s, resident tasks bounded by admission, fds < limit, pool wait exported, "
                  "0 lost")
    with _bench() as (bench, throughput):
        dataset = tmp_path / "data.jsonl"
        throughput.make_dataset(dataset, n)
        args = ["-c", bench.EXAMPLE, "-c", bench.SCRIPTED,
                "++policy_model.responses_api_models.scripted_model.latency_ms=1000",
                f"++policy_model.responses_api_models.scripted_model.num_workers={workers}",
                f"++{bench.AGENT}.responses_api_agents.simple_agent.num_workers={workers}"]
        with start_fleet(tmp_path, args, timeout_s=120) as fleet:
            groups = {name: [int(s["pid"]), *bench.children(int(s["pid"]))]
                      for name, s in fleet.ready["servers"].items()}
            groups["collector"] = [os.getpid()]
            limits = {name: min(_soft_nofile(p) for p in pids) for name, pids in groups.items()}
            sampler = bench.Sampler(groups)
            sampler.start()
            try:
                stats = asyncio.run(_collect(fleet.head_url, dataset, tmp_path / "out.jsonl", n))
            finally:
                sampler.stop.set()
                sampler.join(10)
            metrics = httpx.get(fleet.url(bench.AGENT) + "/metrics", timeout=10).text
    acc = account(tmp_path / "out.jsonl", n)
    fd_headroom = {name: limits[name] - sampler.peak_fds[name] for name in groups}
    sc.observe(rollouts=n, time_to_first_response_s=stats["first_s"], wall_s=stats["wall_s"], ideal_s=2.0,
               retried_attempts=stats["retried"], collector_max_tasks=stats["max_tasks"],
               peak_fds=dict(sampler.peak_fds), fd_limits=limits,
               peak_rss_mb={k: round(v / 2**20) for k, v in sampler.peak_rss.items()}, succeeded=acc["succeeded"],
               lost=acc["lost"], duplicated=acc["duplicated"], load_avg_1m=os.getloadavg()[0])
    sc.check("time to first response < 5 s", stats["first_s"] is not None and stats["first_s"] < 5)
    # Each admitted rollout is one task plus the one wait_for runs its dispatch in: 2 per slot, never per dataset row.
    sc.check("collector's resident tasks bounded by admission (<= 2 x slots + 50)",
             0 < stats["max_tasks"] <= 2 * n + 50)
    sc.check("every process below its open-file limit", all(v > 0 for v in fd_headroom.values()))
    sc.check("pool wait exported as a metric (gymfleet_upstream_pool_wait_seconds)",
             "gymfleet_upstream_pool_wait_seconds" in metrics)
    sc.check("all rollouts succeeded, 0 lost, 0 duplicated",
             acc["succeeded"] == n and acc["lost"] == 0 and acc["duplicated"] == 0)
    sc.check("no attempt failed (no connection refused, reset or timed out: 0 retried)", stats["retried"] == 0)
    sc.finish()


def test_200_concurrent_rollouts(tmp_path: Path, scenario) -> None:
    _run(tmp_path, scenario, 200, workers=2)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_10000_concurrent_rollouts(tmp_path: Path, scenario) -> None:
    _run(tmp_path, scenario, 10_000, workers=4)
