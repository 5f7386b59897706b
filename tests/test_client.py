"""ServerClient: name resolution (local config, head registry), typed errors, balancing and stickiness."""

from __future__ import annotations

import pytest

from gymfleet import transport
from gymfleet.client import ServerClient, fetch_global_config
from gymfleet.errors import HeadUnreachableError, ServerNotFoundError, UpstreamConnectError
from tests.server.peers import cfg_with, closed_port, running_peer

FAST = transport.RetryPolicy(max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.02)


@pytest.fixture(autouse=True)
async def _close_sessions():
    yield
    await transport.close_sessions()


async def test_post_by_name_with_cookies_aiohttp_style():
    async with running_peer() as peer:
        client = ServerClient(cfg_with("example_resources", peer.url))
        resp = await client.post(server_name="example_resources", url_path="/ok", json={"x": 1},
                                 cookies={"A___b": "v"})
        assert resp.status == 200 and resp.ok
        data = await resp.json()
        assert data["cookies"] == {"A___b": "v"} and data["body"] == '{"x":1}'
        assert resp.cookies == {"peer": "1"}
        assert client.server_type_of("example_resources") == "resources_servers"


async def test_unknown_name_suggests_close_names_without_head():
    client = ServerClient(cfg_with("example_resources", "http://127.0.0.1:1"), late_binding_timeout_s=0.1)
    client.head_url = None
    with pytest.raises(ServerNotFoundError) as info:
        await client.post(server_name="example_resource", url_path="/verify", json={})
    assert info.value.suggestions == ["example_resources"]
    assert "Did you mean 'example_resources'" in str(info.value)


async def test_dead_local_server_is_a_typed_error_naming_server_and_url():
    url = f"http://127.0.0.1:{closed_port()}"
    client = ServerClient(cfg_with("res", url), retry=FAST)
    client.head_url = None
    with pytest.raises(UpstreamConnectError) as info:
        await client.post(server_name="res", url_path="/verify", json={})
    assert info.value.server_name == "res" and info.value.url == url + "/verify"


async def test_unreachable_head_says_could_not_connect():
    port = closed_port()
    client = ServerClient({}, head_server_config={"host": "127.0.0.1", "port": port}, late_binding_timeout_s=0.1)
    with pytest.raises(HeadUnreachableError, match="Could not connect to head server"):
        await client.post(server_name="anything", url_path="/x")
    with pytest.raises(HeadUnreachableError, match=f"Could not connect to head server at http://127.0.0.1:{port}"):
        fetch_global_config(f"http://127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(HeadUnreachableError, match="Could not connect to head server"):
        ServerClient.load_from_global_config({"host": "127.0.0.1", "port": port}, timeout_s=2)


async def test_replicas_balance_by_in_flight_and_stick_by_session_cookie():
    async with running_peer() as a, running_peer() as b:
        client = ServerClient({})
        from gymfleet.client import Endpoint, _Entry

        eps = [Endpoint(a.url, "resources_servers", "ida"), Endpoint(b.url, "resources_servers", "idb")]
        client._cache["res"] = _Entry(eps, float("inf"), "local")
        for _ in range(4):
            await client.post(server_name="res", url_path="/ok")
        assert a.hits["ok"] + b.hits.get("ok", 0) == 4
        sticky = {"Server___res": "session.idb.sig"}
        for _ in range(5):
            resp = await client.post(server_name="res", url_path="/ok", cookies=sticky)
            assert resp.instance_id == "idb"
