"""10,000 concurrent rollouts against a model with 1 s latency (issue: rollout collection at scale).

Each rollout makes two model calls (tool call, then answer), so the ideal wall time is ~2 s plus the CPU needed for
~60k HTTP hops on this machine. Open files are capped (20,000 per process here, not raisable), so the agent and model
servers run several pre-forked workers (num_workers) and the collector keeps one connection per in-flight rollout.
Reports wall vs ideal, peak RSS of the collector and of each server process, and peak open fds.

    python bench/bench_10k.py [--rollouts 10000] [--workers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

from bench_throughput import make_dataset
from common import (
    AGENT,
    EXAMPLE,
    SCRIPTED,
    children,
    cpu_seconds,
    fleet_process,
    open_fds,
    print_table,
    rss_bytes,
    write_json,
)

from gymfleet import transport
from gymfleet.client import ServerClient
from gymfleet.fdlimit import raise_open_file_limit
from gymfleet.rollouts import CollectionConfig, RolloutCollector, make_dispatch


class Sampler(threading.Thread):
    """Samples RSS and open fds of a set of processes every 0.25 s (peaks)."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak_rss: dict[str, int] = {k: 0 for k in pids}
        self.peak_fds: dict[str, int] = {k: 0 for k in pids}
        self.cpu: dict[int, float] = {}  # last CPU seconds seen per pid (the servers exit before we could ask)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for name, pids in self.pids.items():
                self.peak_rss[name] = max(self.peak_rss[name], max((rss_bytes(p) for p in pids), default=0))
                self.peak_fds[name] = max(self.peak_fds[name], max((open_fds(p) for p in pids), default=0))
                for p in pids:
                    self.cpu[p] = max(self.cpu.get(p, 0.0), cpu_seconds(p))
            time.sleep(0.25)


async def collect(head_url: str, dataset: Path, out: Path, n: int) -> tuple[float, object]:
    host, port = head_url.removeprefix("http://").rsplit(":", 1)
    client = ServerClient.load_from_global_config({"host": host, "port": int(port)})
    config = CollectionConfig.from_mapping({
        "agent_name": AGENT, "input_jsonl_fpath": str(dataset), "output_jsonl_fpath": str(out),
        "num_samples_in_parallel": n, "quiet": True, "disable_aggregation": True, "rollout_timeout_s": 600,
    })
    start = time.perf_counter()
    summary = await RolloutCollector(config, make_dispatch(client)).run()
    wall = time.perf_counter() - start
    await transport.close_sessions()
    return wall, summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rollouts", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=1000.0)
    args = parser.parse_args()
    raise_open_file_limit()
    w = args.workers
    fleet_args = [
        "-c", EXAMPLE, "-c", SCRIPTED, "++head_server.port=0",
        f"++policy_model.responses_api_models.scripted_model.latency_ms={args.latency_ms}",
        f"++policy_model.responses_api_models.scripted_model.num_workers={w}",
        f"++{AGENT}.responses_api_agents.simple_agent.num_workers={w}",
        f"++example_single_tool_call.resources_servers.example_single_tool_call.num_workers={max(1, w // 2)}",
    ]
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        dataset = tmp / "data.jsonl"
        make_dataset(dataset, args.rollouts)
        with fleet_process(fleet_args, tmp, timeout_s=120) as info:
            groups: dict[str, list[int]] = {}
            for name, server in info["servers"].items():
                pid = int(server["pid"])
                groups[name] = [pid, *children(pid)]
            groups["collector"] = [os.getpid()]
            sampler = Sampler(groups)
            cpu0 = {p: cpu_seconds(p) for pids in groups.values() for p in pids}
            sampler.start()
            wall, summary = asyncio.run(collect(info["head_url"], dataset, tmp / "out.jsonl", args.rollouts))
            sampler.stop.set()
            sampler.join()
            cpu_used = sum(max(sampler.cpu.get(p, 0.0), cpu_seconds(p)) - c for p, c in cpu0.items())
    ideal = 2 * args.latency_ms / 1000
    row = {
        "rollouts": args.rollouts, "succeeded": summary.succeeded, "failed": summary.failed,  # type: ignore[attr-defined]
        "retried_attempts": summary.retried,  # type: ignore[attr-defined]  # failed attempts retried (0 = no errors)
        "wall_s": wall, "ideal_s": ideal, "wall_over_ideal": wall / ideal,
        # What bounds the wall time here: all the processes' CPU over the machine's cores.
        "cpu_s_all_processes": cpu_used, "cpu_bound_wall_s": cpu_used / (os.cpu_count() or 1),
        "cpu_ms_per_rollout": 1000 * cpu_used / args.rollouts,
        "collector_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    for name in groups:
        row[f"{name}_peak_rss_mb_per_proc"] = sampler.peak_rss[name] / 2**20
        row[f"{name}_peak_fds_per_proc"] = sampler.peak_fds[name]
    print_table(f"{args.rollouts} concurrent rollouts, model latency {args.latency_ms:.0f} ms, {w} workers",
                [{"metric": k, "value": v} for k, v in row.items()])
    write_json("10k", {**row, "failed_by_class": json.loads(json.dumps(summary.failed_by_class))})  # type: ignore


if __name__ == "__main__":
    main()
