"""Rollouts/s and server CPU per rollout of the example fleet with the scripted model at 0 ms latency, at several
concurrency levels, through the real collector (the code path of ng_collect_rollouts).

    python bench/bench_throughput.py [--rows 2000] [--concurrency 1 16 64 256] [--repeats 3]

It also measures the collector's own overhead the way a user meets it: ``gymfleet collect`` run as a command,
from the moment the process is started to its first dispatch (imports, config, dataset scan, resume checks), and
from its last outcome to the process exit (aggregate metrics, summary, shutdown).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import AGENT, EXAMPLE, REPO, SCRIPTED, children, cpu_seconds, fleet_process, median, print_table, write_json

from gymfleet import transport
from gymfleet.client import ServerClient
from gymfleet.rollouts import CollectionConfig, RolloutCollector, make_dispatch

CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Perth", "Quito", "Hanoi", "Dakar", "Riga"]
HOPS_PER_ROLLOUT = 6  # collector->agent /run, seed_session, model x2, tool, verify


def make_dataset(path: Path, rows: int) -> None:
    base = json.loads(
        (REPO / "resources_servers/example_single_tool_call/data/example.jsonl").read_text().splitlines()[0]
    )
    with path.open("w") as fh:
        for i in range(rows):
            row = json.loads(json.dumps(base))
            row["responses_create_params"]["input"][1]["content"] = f"what's the weather in {CITIES[i % 10]} ({i})?"
            fh.write(json.dumps(row) + "\n")


async def collect(head_url: str, dataset: Path, out: Path, concurrency: int, limit: int) -> dict[str, float]:
    host, port = head_url.removeprefix("http://").rsplit(":", 1)
    client = ServerClient.load_from_global_config({"host": host, "port": int(port)})
    config = CollectionConfig.from_mapping({
        "agent_name": AGENT, "input_jsonl_fpath": str(dataset), "output_jsonl_fpath": str(out),
        "num_samples_in_parallel": concurrency, "limit": limit, "quiet": True, "disable_aggregation": True,
    })
    start = time.perf_counter()
    summary = await RolloutCollector(config, make_dispatch(client)).run()
    wall = time.perf_counter() - start
    await transport.close_sessions()
    assert summary.succeeded == limit, summary
    return {"wall_s": wall, "rollouts_per_s": limit / wall}


def collector_overhead(head_url: str, dataset: Path, tmp: Path, rows: int, run: int) -> dict[str, float]:
    """One ``gymfleet collect`` command: seconds before its first dispatch and after its last outcome."""
    out, summary_path = tmp / f"overhead-{run}.jsonl", tmp / f"overhead-{run}.summary.json"
    cmd = [sys.executable, "-m", "gymfleet.cli.main", "collect", "--head", head_url.removeprefix("http://"),
           "-a", AGENT, "-i", str(dataset), "-o", str(out), "--limit", str(rows), "--concurrency", "16", "--quiet",
           "--summary-json", str(summary_path)]
    started = time.time()
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
    exited = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"gymfleet collect failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads(summary_path.read_text())
    return {"before_first_dispatch_s": summary["first_dispatch_at"] - started,
            "after_last_outcome_s": exited - summary["last_outcome_at"],
            "total_s": exited - started}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overhead-rows", type=int, default=200, help="rows of each `gymfleet collect` command")
    args = parser.parse_args()
    rows = []
    overhead: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        dataset = tmp / "data.jsonl"
        make_dataset(dataset, args.rows)
        with fleet_process(["-c", EXAMPLE, "-c", SCRIPTED, "++head_server.port=0"], tmp) as info:
            server_pids = [int(s["pid"]) for s in info["servers"].values()]
            launcher = info["proc"].pid
            for concurrency in args.concurrency:
                limit = min(args.rows, 200) if concurrency == 1 else args.rows
                results = []
                for rep in range(args.repeats):
                    pids = [*server_pids, *children(launcher)]
                    cpu0 = sum(cpu_seconds(p) for p in set(pids))
                    result = asyncio.run(collect(info["head_url"], dataset, tmp / f"out-{concurrency}-{rep}.jsonl",
                                                 concurrency, limit))
                    cpu1 = sum(cpu_seconds(p) for p in set(pids))
                    result["server_cpu_ms_per_rollout"] = (cpu1 - cpu0) * 1000 / limit
                    results.append(result)
                rows.append({
                    "concurrency": concurrency,
                    "rollouts": limit,
                    "rollouts_per_s": median([r["rollouts_per_s"] for r in results]),
                    "ms_per_rollout": median([1000 * r["wall_s"] / limit for r in results]),
                    "server_cpu_ms_per_rollout": median([r["server_cpu_ms_per_rollout"] for r in results]),
                })
            for run in range(args.repeats):
                overhead.append(collector_overhead(info["head_url"], dataset, tmp, min(args.rows,
                                                                                       args.overhead_rows), run))
    print_table(f"throughput (scripted model, 0 ms; median of {args.repeats})", rows)
    overhead_row = {key: median([o[key] for o in overhead]) for key in overhead[0]}
    print_table(f"collector overhead, `gymfleet collect` as a command (median of {args.repeats})", [overhead_row])
    write_json("throughput", {"rows": rows, "hops_per_rollout": HOPS_PER_ROLLOUT, "collector_overhead": overhead_row,
                              "collector_overhead_runs": overhead,
                              "targets": {"rollouts_per_s_at_64": 180, "server_cpu_ms_per_rollout": 10,
                                          "ms_per_sequential_rollout": 10,
                                          "collector_overhead_before_s": 1, "collector_overhead_after_s": 1}})


if __name__ == "__main__":
    main()
