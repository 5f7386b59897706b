"""Input limits: body size 413, JSON depth 400, header size 431, invalid bodies 422 with the field path."""

from __future__ import annotations

import asyncio
import json
import time

from gymfleet.server.limits import json_depth_exceeds
from tests.security.apps import asgi_client, fleet_config, head_app, server_apps


def deep(n: int) -> str:
    return "[" * n + "]" * n


def test_json_depth_scan():
    doc = b'{"a": [1, 2, {"b": []}], "c": {}}'  # 4 levels
    assert not json_depth_exceeds(doc, 4)
    assert json_depth_exceeds(doc, 3)
    assert json_depth_exceeds(deep(201).encode(), 200)
    assert not json_depth_exceeds(deep(200).encode(), 200)
    # brackets inside strings (escaped quotes too) do not count
    tricky = json.dumps({"s": "[" * 500 + '\\"' + "{" * 500}).encode()
    assert not json_depth_exceeds(tricky, 5)
    # wide but flat documents pass quickly
    wide = json.dumps([{"x": [i]} for i in range(50_000)]).encode()
    start = time.perf_counter()
    assert not json_depth_exceeds(wide, 200)
    assert time.perf_counter() - start < 0.5
    # malformed bracket soup is left to the JSON parser
    assert not json_depth_exceeds(b"[}" * 300, 200)


async def test_limits_on_a_resources_server():
    config = fleet_config(max_request_bytes=10_000, max_json_depth=50, max_header_bytes=4096)
    app = server_apps(config)["example_single_tool_call"]
    async with asgi_client(app) as client:
        ok = await client.post("/get_weather", json={"city": "sf"})
        assert ok.status_code == 200
        big = await client.post("/get_weather", content=b'{"city": "' + b"x" * 20_000 + b'"}',
                                headers={"content-type": "application/json"})
        assert big.status_code == 413 and big.json()["error"]["type"] == "request_too_large"
        assert "max_request_bytes" in big.json()["error"]["message"]

        async def chunks():
            for _ in range(30):
                yield b"x" * 1000

        streamed = await client.post("/get_weather", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        too_deep = await client.post("/get_weather", content=('{"city": ' + deep(60) + "}").encode(),
                                     headers={"content-type": "application/json"})
        assert too_deep.status_code == 400 and too_deep.json()["error"]["type"] == "json_too_deep"
        headers = await client.get("/", headers={"x-big": "y" * 5000})
        assert headers.status_code == 431
        invalid = await client.post("/get_weather", json={"city": 5})
        assert invalid.status_code == 422
        assert any(d["loc"][-1] == "city" for d in invalid.json()["detail"])
        bad_length = await client.post("/get_weather", content=b"{}", headers={"content-length": "nope"})
        assert bad_length.status_code == 400
        # the server is still fine
        assert (await client.post("/get_weather", json={"city": "oslo"})).status_code == 200


async def test_deep_json_within_limits_never_500s():
    app = server_apps(fleet_config())["example_single_tool_call_simple_agent"]
    async with asgi_client(app) as client:
        for depth in (150, 199, 200, 201, 5000):
            body = ('{"responses_create_params": {"input": ' + deep(depth) + "}}").encode()
            resp = await client.post("/run", content=body, headers={"content-type": "application/json"})
            assert resp.status_code in (400, 422), (depth, resp.status_code, resp.text[:200])


async def test_head_has_the_limits_too():
    _, app = head_app(fleet_config(max_request_bytes=1000))
    async with asgi_client(app) as client:
        resp = await client.post("/registry/register", content=b"{" + b" " * 2000 + b"}",
                                 headers={"content-type": "application/json"})
        assert resp.status_code == 413
        # concurrent garbage does not wedge it
        results = await asyncio.gather(*(client.post("/registry/heartbeat", content=b"\xff" * 100)
                                         for _ in range(20)))
        assert {r.status_code for r in results} <= {400, 422}
        assert (await client.get("/")).status_code == 200
