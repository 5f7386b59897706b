"""Head registry under load: N instances registered and heartbeating; latency (p50/p99) of /server_instances and
of name resolution (/registry/instances?name=...) while the heartbeats run.

    python bench/bench_registry.py [--instances 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import time

import uvicorn
from common import percentile, print_table, write_json

from gymfleet import transport
from gymfleet.head.app import Head, build_head_app


class _Embedded(uvicorn.Server):
    def capture_signals(self):  # type: ignore[override]
        return contextlib.nullcontext()


async def run(instances: int, seconds: float, heartbeat_s: float) -> dict[str, float]:
    head = Head({"head_server": {"host": "127.0.0.1", "port": 0}}, lease_s=heartbeat_s * 3, evict_after_s=60)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = _Embedded(uvicorn.Config(build_head_app(head), log_config=None, access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    ids = []
    for i in range(instances):
        resp = await transport.send("POST", url + "/registry/register", json={
            "name": f"server_{i % 100}", "server_type": "resources_servers", "impl": "impl", "host": "127.0.0.1",
            "port": 10000 + i, "url": f"http://127.0.0.1:{10000 + i}", "pid": i})
        ids.append(resp.json()["instance_id"])
    deadline = time.monotonic() + seconds
    beats = 0

    async def heartbeat(iid: str, offset: float) -> None:  # one coroutine per instance, like real servers
        nonlocal beats
        await asyncio.sleep(offset)
        while time.monotonic() < deadline:
            await transport.send("POST", url + "/registry/heartbeat", json={"instance_id": iid})
            beats += 1
            await asyncio.sleep(heartbeat_s)

    async def heartbeats() -> None:
        await asyncio.gather(*(heartbeat(iid, i * heartbeat_s / len(ids)) for i, iid in enumerate(ids)))

    async def probe(path: str, out: list[float]) -> None:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            resp = await transport.send("GET", url + path)
            assert resp.status == 200
            out.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(0.02)

    listing: list[float] = []
    resolve: list[float] = []
    await asyncio.gather(heartbeats(), probe("/server_instances", listing), probe("/registry/instances?name=server_7",
                                                                                   resolve))
    server.should_exit = True
    await task
    await transport.close_sessions()
    return {
        "instances": instances, "heartbeats_per_s": beats / seconds,
        "server_instances_p50_ms": percentile(listing, 50), "server_instances_p99_ms": percentile(listing, 99),
        "resolve_p50_ms": percentile(resolve, 50), "resolve_p99_ms": percentile(resolve, 99),
        "healthy_at_end": sum(1 for e in head.registry.instances() if e.status == "healthy"),
    }


def main() -> None:
    import logging

    logging.getLogger("gymfleet").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--heartbeat", type=float, default=3.0, help="heartbeat interval per instance (s)")
    args = parser.parse_args()
    result = asyncio.run(run(args.instances, args.seconds, args.heartbeat))
    print_table("head registry under heartbeat load", [{"metric": k, "value": v} for k, v in result.items()])
    write_json("registry", result)


if __name__ == "__main__":
    main()
