"""The pieces the fault scenarios rely on, checked on their own (fast, no fleet): the fixes in gymfleet and the fault
tools themselves."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from gymfleet import transport
from gymfleet.launcher.endpoints import model_endpoints, wait_for_model_endpoints
from gymfleet.server.isolate import DeadlineExceededError, IsolatedError, run_isolated
from gymfleet.server.session import SessionMiddleware, sign_session
from tests.fakes.live_server import live_server
from tests.faults.tools.proxy import FaultProxy
from tests.faults.tools.upstream import Upstream
from tests.faults.tools.work import add, boom, spin


async def test_run_isolated_returns_kills_at_the_deadline_and_types_errors() -> None:
    assert await run_isolated(add, 2, 3, timeout_s=30) == 5
    start = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        await run_isolated(spin, timeout_s=0.5)
    assert time.monotonic() - start < 10
    with pytest.raises(IsolatedError, match="ValueError: bad input"):
        await run_isolated(boom, timeout_s=30)


def test_retry_after_is_honoured_with_jitter() -> None:
    policy = transport.RetryPolicy()
    waits = [policy.wait_after(1.0, 1) for _ in range(200)]
    assert min(waits) >= 1.0 and max(waits) <= 1.25 and len({round(w, 3) for w in waits}) > 50
    assert 0.1 <= policy.wait_after(None, 1) <= 0.2  # no Retry-After: the backoff


async def test_a_gymfleet_typed_error_answer_is_final_for_the_transport() -> None:
    calls = {"typed": 0, "plain": 0}
    app = FastAPI()

    @app.post("/typed")
    async def typed() -> JSONResponse:
        calls["typed"] += 1
        return JSONResponse({"error": {"type": "upstream_connect"}}, 502, headers={transport.FINAL_ERROR_HEADER: "x"})

    @app.post("/plain")
    async def plain() -> JSONResponse:
        calls["plain"] += 1
        return JSONResponse({}, 503)

    retry = transport.RetryPolicy(max_attempts=3, backoff_initial_s=0.01)
    try:
        async with live_server(app) as url:
            assert (await transport.send("POST", url + "/typed", json={}, retry=retry)).status == 502
            assert (await transport.send("POST", url + "/plain", json={}, retry=retry)).status == 503
    finally:
        await transport.close_sessions()
    assert calls == {"typed": 1, "plain": 3}


async def test_a_session_of_another_instance_is_refused_by_a_stateful_server() -> None:
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    secret = b"s" * 32
    strict = SessionMiddleware(app, cookie_name="C", secret=secret, instance_id="new", strict=True, server_name="env")
    lenient = SessionMiddleware(app, cookie_name="C", secret=secret, instance_id="new")
    old = {"C": sign_session(secret, "sid", "old")}
    for middleware, path, expected in ((strict, "/verify", 409), (strict, "/seed_session", 200),
                                       (lenient, "/verify", 200)):
        transport_ = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(transport=transport_, base_url="http://t", cookies=old) as client:
            resp = await client.post(path)
        assert resp.status_code == expected, (path, resp.text)
        if expected == 409:
            assert resp.json()["error"]["type"] == "session_lost" and resp.headers["x-gymfleet-error"]


async def test_model_endpoints_are_found_and_waited_for() -> None:
    config = {
        "policy_base_url": "http://127.0.0.1:9/v1",
        "m": {"responses_api_models": {"vllm_model": {"base_url": ["http://a:1/v1", "http://b:2/v1"]}}},
        "o": {"responses_api_models": {"openai_model": {"openai_base_url": "http://c:3/v1/"}}},
        "r": {"resources_servers": {"x": {"base_url": "http://not-a-model:4"}}},
    }
    found = model_endpoints(config)
    assert [u for u, _ in found] == ["http://a:1/v1", "http://b:2/v1", "http://c:3/v1"]
    assert found[2][1] == "o.responses_api_models.openai_model.openai_base_url"
    assert model_endpoints(config, names={"o"}) == [found[2]]
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{held.getsockname()[1]}/v1"
    one = {"o": {"responses_api_models": {"openai_model": {"openai_base_url": url}}}}
    try:
        upstream = Upstream(sock=held)
        asyncio.get_running_loop().call_later(0.5, upstream.start)
        waited = await wait_for_model_endpoints(one, 10)
        assert 0.4 < waited < 5
        upstream.stop()
    finally:
        held.close()
        await transport.close_sessions()


def test_proxy_resets_and_stalls_on_command() -> None:
    with Upstream() as upstream, FaultProxy("127.0.0.1", upstream.port) as proxy:
        with httpx.Client(base_url=proxy.url, timeout=2) as client:
            assert client.get("/v1/models").status_code == 200
        proxy.set_mode("reset")
        with httpx.Client(base_url=proxy.url, timeout=2) as client, pytest.raises(httpx.TransportError):
            client.get("/v1/models")
        proxy.set_mode("stall")
        with httpx.Client(base_url=proxy.url, timeout=1) as client, pytest.raises(httpx.ReadTimeout):
            client.get("/v1/models")
        proxy.set_mode("pass")
        with httpx.Client(base_url=proxy.url, timeout=2) as client:
            assert client.get("/v1/models").status_code == 200
