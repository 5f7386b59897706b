"""The machine's raw HTTP hop rate: a minimal uvicorn (httptools, uvloop) app answering a small JSON POST,
hammered by gymfleet's own client (transport.send) at the given concurrency. A rollout is HOPS_PER_ROLLOUT hops, so
hop_rate / HOPS_PER_ROLLOUT is the ceiling of rollouts/s on this machine.

    python bench/bench_hop_limit.py [--requests 5000] [--concurrency 1 16 64 256]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

from common import median, print_table, write_json

from gymfleet import transport

ECHO_APP = r'''
import socket, sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})
sock = socket.socket(fileno=int(sys.argv[1]))
uvicorn.Server(uvicorn.Config(app, loop="uvloop", http="httptools", log_level="warning",
                              access_log=False)).run(sockets=[sock])
'''


async def hammer(url: str, requests: int, concurrency: int) -> float:
    payload = {"input": [{"role": "user", "content": "hello " * 20}]}
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            resp = await transport.send("POST", url, json=payload)
            assert resp.status == 200

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await transport.close_sessions()
    return requests / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.set_inheritable(True)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/echo"
    proc = subprocess.Popen([sys.executable, "-c", ECHO_APP, str(sock.fileno())], pass_fds=[sock.fileno()],
                            start_new_session=True)
    rows = []
    try:
        time.sleep(1.0)
        for concurrency in args.concurrency:
            n = min(args.requests, 1000) if concurrency == 1 else args.requests
            rates = [asyncio.run(hammer(url, n, concurrency)) for _ in range(args.repeats)]
            rows.append({"concurrency": concurrency, "requests": n, "hops_per_s": median(rates)})
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        sock.close()
    print_table(f"raw HTTP hop rate (minimal uvicorn app; median of {args.repeats})", rows)
    write_json("hop_limit", {"rows": rows})


if __name__ == "__main__":
    main()
