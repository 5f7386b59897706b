"""ServerClient routing across instances the head knows, on loopback (runs everywhere, no namespaces needed).

The namespace suite proves these behaviours across hosts; here each one is pinned in isolation: a real head
app on 127.0.0.1:0, real peer servers, and the registry filled over its HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import uvicorn

from gymfleet import transport
from gymfleet.client import ServerClient
from gymfleet.errors import HeadUnreachableError
from gymfleet.head.app import Head, build_head_app
from gymfleet.launcher.ports import bind_socket
from tests.server.peers import Peer, running_peer

FAST = transport.RetryPolicy(max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.02)


@pytest.fixture(autouse=True)
async def _close_sessions() -> AsyncIterator[None]:
    yield
    await transport.close_sessions()


class _Quiet(uvicorn.Server):
    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


@contextlib.asynccontextmanager
async def running_head(lease_s: float = 30.0) -> AsyncIterator[tuple[Head, str, _Quiet]]:
    head = Head({}, lease_s=lease_s, evict_after_s=60.0)
    sock = bind_socket("127.0.0.1", 0)
    server = _Quiet(uvicorn.Config(build_head_app(head), log_config=None, access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):  # bounded: 5 s
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started
    try:
        yield head, f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def register(head_url: str, name: str, peer: Peer, instance_id: str) -> None:
    port = int(peer.url.rsplit(":", 1)[1])
    info = {"instance_id": instance_id, "name": name, "server_type": "resources_servers", "impl": "peer",
            "host": "127.0.0.1", "port": port, "url": peer.url}
    resp = await transport.send("POST", head_url + "/registry/register", json=info, retry=FAST)
    resp.raise_for_status()


def client_for(head_url: str, **kwargs: object) -> ServerClient:
    host, port = head_url.removeprefix("http://").rsplit(":", 1)
    return ServerClient({}, head_server_config={"host": host, "port": int(port)}, retry=FAST, **kwargs)


async def test_ties_in_flight_are_taken_in_turn_across_replicas() -> None:
    async with running_head() as (_, head_url, _), running_peer() as a, running_peer() as b:
        await register(head_url, "res", a, "ida")
        await register(head_url, "res", b, "idb")
        client = client_for(head_url)
        for _ in range(10):  # sequential calls: always a tie at zero in flight
            assert (await client.post(server_name="res", url_path="/ok")).status == 200
        assert (a.hits["ok"], b.hits["ok"]) == (5, 5)


async def test_a_dead_replica_is_routed_around_while_the_head_still_lists_it() -> None:
    async with running_head() as (head, head_url, _), running_peer() as b:
        async with running_peer() as a:
            await register(head_url, "res", a, "ida")
            await register(head_url, "res", b, "idb")
        # `a` is gone; its lease has not run out, so the head still lists it as healthy
        assert [e.status for e in head.registry.by_name("res")] == ["healthy", "healthy"]
        client = client_for(head_url, cache_ttl_s=0.0)  # ask the head before every call
        for _ in range(6):
            resp = await client.post(server_name="res", url_path="/ok")
            assert resp.status == 200 and resp.instance_id == "idb"
        assert b.hits["ok"] == 6


async def test_known_names_keep_routing_while_the_head_is_down() -> None:
    async with running_peer() as peer:
        async with running_head() as (_, head_url, _):
            await register(head_url, "res", peer, "id1")
            client = client_for(head_url, cache_ttl_s=0.0, late_binding_timeout_s=0.3)
            assert (await client.post(server_name="res", url_path="/ok")).status == 200
        # the head is down (a restart): the instance we knew still serves
        for _ in range(3):
            assert (await client.post(server_name="res", url_path="/ok")).status == 200
        assert peer.hits["ok"] == 4
        with pytest.raises(HeadUnreachableError, match="Could not connect to head server"):
            await client.post(server_name="never_seen", url_path="/ok")


async def test_an_instance_that_missed_its_lease_is_kept_when_it_is_the_only_one() -> None:
    async with running_head(lease_s=0.2) as (head, head_url, _), running_peer() as peer:
        await register(head_url, "res", peer, "id1")
        client = client_for(head_url, cache_ttl_s=0.0)
        assert (await client.post(server_name="res", url_path="/ok")).status == 200
        for _ in range(100):  # bounded: 2 s
            if head.registry.by_name("res", healthy_only=False)[0].status == "unhealthy":
                break
            await asyncio.sleep(0.02)
        assert head.registry.by_name("res") == []  # no heartbeats: the head lists it unhealthy
        # nothing better is known: keep calling it (it answers) instead of failing every call
        assert (await client.post(server_name="res", url_path="/ok")).status == 200
