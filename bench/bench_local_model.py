"""Tokens/s of the embedded local model (SmolLM2-135M, CPU) at 1, 4 and 16 concurrent requests; peak RSS.

Starts a fleet with only ``policy_model`` (responses_api_models/local_model) as a real subprocess, then each
of ``concurrency`` clients sends ``--rounds`` chat completions back to back: ``--tokens`` new tokens each
(``ignore_eos``, so every answer has the same length), sampled at temperature 0.8 with a per-request seed.
Aggregate tokens/s = generated tokens / wall time of the level. Continuous batching should make the 16-way
level clearly faster in aggregate than the 1-way level. Peak RSS is the server process's VmHWM after each
level.

    python bench/bench_local_model.py [--tokens 32] [--rounds 2] [--concurrency 1 4 16] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO, fleet_process, median, percentile, print_table, write_json

from gymfleet import transport

LOCAL_MODEL = "responses_api_models/local_model/configs/local_model.yaml"
PROMPT = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def level(url: str, concurrency: int, rounds: int, tokens: int) -> dict[str, Any]:
    latencies: list[float] = []
    generated = 0

    async def client(index: int) -> None:
        nonlocal generated
        for r in range(rounds):
            body = {
                "messages": PROMPT,
                "max_tokens": tokens,
                "temperature": 0.8,
                "seed": index * 1000 + r,
                "ignore_eos": True,
            }
            start = time.perf_counter()
            resp = await transport.send("POST", url, json=body, timeout=transport.Timeouts(10.0, 900.0))
            resp.raise_for_status()
            latencies.append(time.perf_counter() - start)
            generated += int(resp.json()["usage"]["completion_tokens"])

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    wall = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "requests": concurrency * rounds,
        "tokens": generated,
        "wall_s": wall,
        "tokens_per_s": generated / wall,
        "p50_latency_s": median(latencies),
        "p95_latency_s": percentile(latencies, 95),
    }


async def run(url: str, pid: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    await level(url, 1, 1, 4)  # warm-up: page the weights in
    rows = []
    for concurrency in args.concurrency:
        row = await level(url, concurrency, args.rounds, args.tokens)
        row["peak_rss_mb"] = peak_rss_mb(pid)
        rows.append(row)
    await transport.close_sessions()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads of the server (default: all)"
    )
    args = parser.parse_args()
    overrides = [f"++policy_model.responses_api_models.local_model.max_batch_size={max(args.concurrency)}"]
    if args.threads:
        overrides.append(f"++policy_model.responses_api_models.local_model.num_threads={args.threads}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        fleet_process(
            ["-c", LOCAL_MODEL, "++head_server.port=0", *overrides], Path(tmp), timeout_s=600
        ) as fleet,
    ):
        server = fleet["servers"]["policy_model"]
        rows = asyncio.run(run(server["url"] + "/v1/chat/completions", int(server["pid"]), args))
        startup_s = fleet["startup_s"]
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["speedup_vs_first"] = row["tokens_per_s"] / base
    print_table(
        f"local_model (SmolLM2-135M, CPU) — {args.tokens} tokens per request, fleet start {startup_s:.1f}s",
        rows,
    )
    path = write_json(
        "local_model",
        {
            "tokens_per_request": args.tokens,
            "rounds": args.rounds,
            "fleet_startup_s": startup_s,
            "levels": rows,
        },
    )
    print(f"\nwrote {path.relative_to(REPO)}")  # noqa: T201 - a benchmark script reports on stdout


if __name__ == "__main__":
    main()
