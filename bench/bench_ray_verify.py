"""Verify throughput of math_verify on 1 vs 2 Ray workers (issue 6), with the local pool as a baseline.

For each worker count N, a loopback Ray cluster with ``--num-cpus=N`` is started (so Ray runs N checks at
once), a fleet with only math_verify joins it (``ray_head_node_address`` + token), and a load generator
posts ``--verifies`` distinct symbolic checks (polynomial identities, ~0.1-0.2 s of sympy each) with
``--concurrency`` requests in flight. The baseline runs the same load with ``ray: false`` (a local pool of N
processes). Reports verifies/s and latency percentiles; writes ``bench/results/ray_verify.json``.

On a 2-core machine two workers can at best double one worker's throughput, minus what the server, the load
generator and Ray's own processes take from the same two cores.

    python bench/bench_ray_verify.py [--verifies 120] [--concurrency 8] [--workers 1 2] [--no-local]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import fleet_process, percentile, print_table, write_json

from gymfleet.ray_support import LocalRayCluster

CONFIG = """\
math_verify:
  resources_servers:
    math_verify:
      entrypoint: app.py
      domain: math
      ray: {ray}
      local_workers: {workers}
      check_timeout_s: 60
"""


def workload(n: int) -> list[dict[str, Any]]:
    import sympy

    x = sympy.Symbol("x")
    rows = []
    for i in range(n):
        k, p = 2 + i, 8 + i % 5  # all distinct: sympy's cache cannot answer a repeat
        expected = str(sympy.expand((x + k) ** p))
        answer = f"so the answer is \\boxed{{(x+{k})^{{{p}}}}}"
        rows.append(
            {
                "responses_create_params": {"input": "expand"},
                "response": {
                    "output": [
                        {
                            "type": "message",
                            "role": "assistant",
                            "content": [{"type": "output_text", "text": answer}],
                        }
                    ]
                },
                "expected_answer": expected,
            }
        )
    return rows


async def load(url: str, rows: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    failures = 0
    backends: set[str] = set()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for row in rows:
        queue.put_nowait(row)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failures
        while not queue.empty():
            row = queue.get_nowait()
            start = time.perf_counter()
            resp = await client.post(url, json=row)
            latencies.append(time.perf_counter() - start)
            body = resp.json()
            if resp.status_code != 200 or body.get("reward") != 1.0:
                failures += 1
            else:
                backends.add(body["verify_trace"]["backend"])

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:
        await client.post(url, json=rows[0])  # warm: first connection, Ray join, worker warm-up
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {
        "verifies_per_s": len(rows) / wall,
        "wall_s": wall,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "failures": failures,
        "backend": ",".join(sorted(backends)),
    }


def run_setting(backend: str, workers: int, rows: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="gfbench-"))
    cluster = None
    try:
        config = tmp / "math_verify.yaml"
        config.write_text(CONFIG.format(ray="auto" if backend == "ray" else "false", workers=workers))
        args = ["-c", str(config), "++head_server.port=0"]
        if backend == "ray":
            cluster = LocalRayCluster(num_cpus=workers, object_store_memory=200 * 2**20)
            address = asyncio.run(cluster.start(timeout_s=300))
            args += [f"++ray_head_node_address={address}", f"++ray_auth_token_path={cluster.token_path}"]
        with fleet_process(args, tmp, timeout_s=120) as fleet:
            url = fleet["servers"]["math_verify"]["url"] + "/verify"
            result = asyncio.run(load(url, rows, concurrency))
        return {"backend": backend, "workers": workers, **result}
    finally:
        if cluster is not None:
            asyncio.run(cluster.stop())
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--verifies", type=int, default=120)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-local", action="store_true", help="skip the local-pool baseline")
    args = parser.parse_args()
    rows = workload(args.verifies)
    results = []
    for backend in ("ray",) if args.no_local else ("ray", "local"):
        for workers in args.workers:
            results.append(run_setting(backend, workers, rows, args.concurrency))
    title = f"math_verify throughput ({args.verifies} symbolic checks, {args.concurrency} in flight)"
    print_table(title, results)
    ray = {r["workers"]: r["verifies_per_s"] for r in results if r["backend"] == "ray"}
    if 1 in ray and 2 in ray:
        print(f"\n2 vs 1 Ray workers: {ray[2] / ray[1]:.2f}x")
    summary = {"verifies": args.verifies, "concurrency": args.concurrency, "results": results}
    path = write_json("ray_verify", summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
