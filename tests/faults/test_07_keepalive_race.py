"""Mode 7: the keep-alive race (server idle timeout shorter than the client pool's: a pooled socket the server is
closing gets reused and the request dies with ``ServerDisconnectedError``).

gymfleet servers keep idle connections 30 s, the client pool 15 s, so the client always drops first. Scenario: 1000
requests through the real pooled transport, each followed by a pause longer than uvicorn's default 5 s idle timeout.
Expected: zero disconnects, counted both as errors and as transparent retries (the transport's retry log), and the
same load against a server with NeMo Gym's old 5 s idle timeout shows the race exists (control, recorded only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from gymfleet import transport
from gymfleet.errors import ClientError
from tests.faults.tools.fleet import SCRIPTED_CONFIG, start_fleet


class Disconnects(logging.Handler):
    """Counts the transport's 'disconnected; retry' warnings: a reused stale socket the retry hid."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "disconnected" in message or "network error" in message:
            self.count += 1


async def _load(url: str, *, loops: int, requests_each: int, pause: tuple[float, float]) -> dict[str, int]:
    """``loops`` concurrent clients on the shared pool; each sends, pauses, sends again..."""
    errors: dict[str, int] = {}
    ok = 0
    retry = transport.RetryPolicy(max_attempts=2, backoff_initial_s=0.01)

    async def client(i: int) -> None:
        nonlocal ok
        rng = random.Random(i)
        for n in range(requests_each):
            try:
                resp = await transport.send("POST", url, json={"input": f"hi {i}/{n}"}, retry=retry,
                                            timeout=transport.Timeouts(5.0, 30.0), server_name="keepalive_target")
                ok += resp.status == 200
            except ClientError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            if n + 1 < requests_each:
                await asyncio.sleep(rng.uniform(*pause))

    try:
        await asyncio.gather(*(client(i) for i in range(loops)))
    finally:
        await transport.close_sessions()
    return {"ok": ok, **errors}


def _run(url: str, **kwargs) -> tuple[dict[str, int], int, float]:  # type: ignore[no-untyped-def]
    handler = Disconnects()
    log = logging.getLogger("gymfleet.transport")
    log.addHandler(handler)
    start = time.monotonic()
    try:
        result = asyncio.run(_load(url, **kwargs))
    finally:
        log.removeHandler(handler)
    return result, handler.count, time.monotonic() - start


async def _control(keepalive_s: float, **kwargs) -> tuple[dict[str, int], int]:  # type: ignore[no-untyped-def]
    """The same load against a plain uvicorn with a short idle timeout (NeMo Gym before its fix)."""
    app = FastAPI()

    @app.post("/v1/responses")
    async def answer() -> dict[str, str]:
        return {"ok": "yes"}

    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, timeout_keep_alive=keepalive_s))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        handler = Disconnects()
        logging.getLogger("gymfleet.transport").addHandler(handler)
        try:
            result = await _load(f"http://127.0.0.1:{sock.getsockname()[1]}/v1/responses", **kwargs)
        finally:
            logging.getLogger("gymfleet.transport").removeHandler(handler)
        return result, handler.count
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        sock.close()


def _scenario(tmp_path: Path, scenario, *, loops: int, requests_each: int, pause: tuple[float, float],  # type: ignore[no-untyped-def]
              name: str) -> None:
    total = loops * requests_each
    sc = scenario(7, name, f"{total} requests with pauses {pause[0]:g}-{pause[1]:g}s: 0 ServerDisconnectedError, "
                           "0 hidden disconnect retries")
    with start_fleet(tmp_path, ["-c", SCRIPTED_CONFIG]) as fleet:
        result, hidden, wall = _run(fleet.url("policy_model") + "/v1/responses", loops=loops,
                                    requests_each=requests_each, pause=pause)
    errors = {k: v for k, v in result.items() if k != "ok"}
    control, control_hidden = asyncio.run(_control(5.0, loops=200, requests_each=2, pause=(4.95, 5.05)))
    sc.observe(requests=total, ok=result["ok"], errors=errors, disconnect_retries=hidden, wall_s=wall,
               control_server_idle_5s_disconnects=control_hidden + sum(v for k, v in control.items() if k != "ok"))
    sc.check(f"all {total} requests answered", result["ok"] == total)
    sc.check("0 disconnect errors", not errors)
    sc.check("0 stale pooled sockets reused (no hidden disconnect retries)", hidden == 0)
    sc.finish()


def test_keepalive_race_1000_requests_after_5s_pauses(tmp_path: Path, scenario) -> None:
    _scenario(tmp_path, scenario, loops=500, requests_each=2, pause=(5.0, 7.0),
              name="keep-alive race (1000 requests, 5-7 s pauses)")


@pytest.mark.slow
def test_keepalive_race_1000_requests_after_6_to_20s_pauses(tmp_path: Path, scenario) -> None:
    _scenario(tmp_path, scenario, loops=100, requests_each=10, pause=(6.0, 20.0),
              name="keep-alive race (1000 requests, 6-20 s pauses, slow)")
