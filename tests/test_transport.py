"""Deadlines, bounded retries and typed errors of gymfleet.transport against a real peer."""

from __future__ import annotations

import time

import pytest

from gymfleet import transport
from gymfleet.errors import UpstreamConnectError, UpstreamDisconnectedError, UpstreamStatusError, UpstreamTimeoutError
from tests.server.peers import closed_port, running_peer

FAST = transport.RetryPolicy(max_attempts=3, backoff_initial_s=0.01, backoff_max_s=0.05)


@pytest.fixture(autouse=True)
async def _close_sessions():
    yield
    await transport.close_sessions()


async def test_retry_after_is_honoured_then_success():
    async with running_peer() as peer:
        start = time.monotonic()
        resp = await transport.send("GET", peer.url + "/flaky", retry=FAST)
        assert resp.status == 200 and resp.json() == {"n": 3}
        assert time.monotonic() - start >= 0.2  # two Retry-After waits of 0.1 s
        assert peer.hits["flaky"] == 3


async def test_retries_are_bounded_and_status_returned():
    async with running_peer() as peer:
        resp = await transport.send("GET", peer.url + "/always503", retry=FAST)
        assert resp.status == 503 and peer.hits["always503"] == 3
        with pytest.raises(UpstreamStatusError) as info:
            resp.raise_for_status()
        assert info.value.status == 503 and peer.url in str(info.value)


async def test_client_errors_are_not_retried():
    async with running_peer() as peer:
        resp = await transport.send("GET", peer.url + "/teapot", retry=FAST)
        assert resp.status == 418 and peer.hits["teapot"] == 1


async def test_connection_refused_is_typed_after_bounded_attempts():
    url = f"http://127.0.0.1:{closed_port()}/x"
    start = time.monotonic()
    with pytest.raises(UpstreamConnectError) as info:
        await transport.send("POST", url, json={}, retry=FAST, server_name="policy_model")
    assert time.monotonic() - start < 5
    assert info.value.server_name == "policy_model" and info.value.url == url
    assert "after 3 attempt" in str(info.value) and "policy_model" in str(info.value)


async def test_total_deadline_is_typed():
    async with running_peer() as peer:
        with pytest.raises(UpstreamTimeoutError):
            await transport.send(
                "GET", peer.url + "/slow", timeout=transport.Timeouts(connect=1, total=0.3), retry=FAST
            )


async def test_dropped_connection_is_typed():
    async with running_peer() as peer:
        with pytest.raises(UpstreamDisconnectedError):
            await transport.send("POST", peer.url + "/drop", json={}, retry=FAST)
        assert peer.hits["drop"] == 3  # POST: aiohttp adds no hidden retry of its own


async def test_pydantic_bodies_are_dumped_exclude_unset():
    from pydantic import BaseModel

    class Body(BaseModel):
        a: int = 1
        b: int | None = None

    async with running_peer() as peer:
        resp = await transport.send("POST", peer.url + "/ok", json=Body(b=2))
        assert resp.json()["body"] == '{"b":2}'


def test_backoff_is_capped_and_jittered():
    policy = transport.RetryPolicy(backoff_initial_s=0.5, backoff_max_s=2.0)
    delays = [policy.backoff(n) for n in range(1, 10)]
    assert all(0 < d <= 2.0 for d in delays)
    assert max(delays[5:]) >= 1.0
