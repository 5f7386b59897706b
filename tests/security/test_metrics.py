"""Metrics in-process: request counts and latency by route template, in-flight, rollouts, upstream calls and
retries, the head's registry, the collector's dispatch counters and its optional /metrics server."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gymfleet import metrics, security, transport
from gymfleet.metrics_server import serve_metrics
from gymfleet.rollouts.failures import RolloutFailure
from tests.security.apps import AGENT, RESOURCES, TOKEN, asgi_client, fleet_config, head_app, server_apps
from tests.server.peers import running_peer

REG = metrics.REGISTRY


def value(name: str, **labels: str) -> float:
    return REG.get_sample_value(name, labels) or 0.0


async def test_requests_are_counted_by_route_template_and_status():
    app = server_apps(fleet_config())[RESOURCES]
    before_ok = value("gymfleet_http_requests_total", server=RESOURCES, method="POST", route="/get_weather",
                      status="200")
    before_404 = value("gymfleet_http_requests_total", server=RESOURCES, method="GET", route="<unmatched>",
                       status="404")
    async with asgi_client(app) as client:
        for city in ("a", "b", "c"):
            assert (await client.post("/get_weather", json={"city": city})).status_code == 200
        for n in range(3):
            assert (await client.get(f"/no/such/route/{n}")).status_code == 404
        assert (await client.post("/get_weather", json={})).status_code == 422
        text = (await client.get("/metrics")).text
    assert value("gymfleet_http_requests_total", server=RESOURCES, method="POST", route="/get_weather",
                 status="200") == before_ok + 3
    assert value("gymfleet_http_requests_total", server=RESOURCES, method="GET", route="<unmatched>",
                 status="404") == before_404 + 3  # random paths share one label: bounded cardinality
    assert value("gymfleet_http_request_duration_seconds_count", server=RESOURCES, method="POST",
                 route="/get_weather") >= 4
    assert value("gymfleet_http_requests_in_flight", server=RESOURCES) == 0
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"gymfleet_http_requests", "gymfleet_http_request_duration_seconds",
            "gymfleet_http_requests_in_flight"} <= names


async def test_agent_counts_run_outcomes():
    app = server_apps(fleet_config())[AGENT]
    started = value("gymfleet_rollouts_started_total", agent=AGENT, source="agent")
    failed = value("gymfleet_rollouts_failed_total", agent=AGENT, source="agent", failure_class="upstream_error")
    async with asgi_client(app) as client:
        resp = await client.post("/run", json={"responses_create_params": {"input": "hi"}})
        assert resp.status_code == 502  # its peers resolve nowhere in-process
    assert value("gymfleet_rollouts_started_total", agent=AGENT, source="agent") == started + 1
    assert value("gymfleet_rollouts_failed_total", agent=AGENT, source="agent",
                 failure_class="upstream_error") == failed + 1


async def test_upstream_calls_and_retries_by_target():
    async with running_peer() as peer:
        before = value("gymfleet_upstream_request_duration_seconds_count", target="peer_x", outcome="2xx")
        retries = value("gymfleet_upstream_retries_total", target="peer_x")
        resp = await transport.send("GET", peer.url + "/flaky", server_name="peer_x",
                                    retry=transport.RetryPolicy(max_attempts=4, backoff_initial_s=0.01))
        assert resp.status == 200
        external = value("gymfleet_upstream_request_duration_seconds_count", target="upstream", outcome="4xx")
        assert (await transport.send("GET", peer.url + "/teapot", retry=transport.NO_RETRY)).status == 418
        await transport.close_sessions()
    assert value("gymfleet_upstream_request_duration_seconds_count", target="peer_x", outcome="2xx") == before + 1
    assert value("gymfleet_upstream_retries_total", target="peer_x") == retries + 2
    assert value("gymfleet_upstream_request_duration_seconds_count", target="upstream", outcome="4xx") == external + 1


async def test_fleet_hops_carry_the_token_and_outside_calls_never_do():
    from aiohttp import web

    received: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        received.append(request.headers.get("Authorization"))
        return web.json_response({})

    server_app = web.Application()
    server_app.router.add_get("/", handler)
    runner = web.AppRunner(server_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"  # type: ignore[union-attr]
    security.apply_process_settings(security.settings_from_config({"fleet_token": TOKEN}, environ={}))
    try:
        await transport.send("GET", url, server_name="fleet_peer")
        await transport.send("GET", url)  # an outside upstream: no fleet token
        await transport.send("GET", url, server_name="fleet_peer", headers={"Authorization": "Bearer other"})
    finally:
        security.apply_process_settings(security.SecuritySettings())
        await transport.close_sessions()
        await runner.cleanup()
    assert received == [f"Bearer {TOKEN}", None, "Bearer other"]


async def test_head_exports_registry_size_and_heartbeat_age():
    head, app = head_app(fleet_config())
    async with asgi_client(app) as client:
        body = {"name": "m", "server_type": "responses_api_models", "impl": "x", "host": "127.0.0.1", "port": 9,
                "url": "http://127.0.0.1:9"}
        assert (await client.post("/registry/register", json=body)).status_code == 200
        text = (await client.get("/metrics")).text
    assert 'gymfleet_registry_instances{status="healthy"} 1.0' in text
    assert 'gymfleet_registry_heartbeat_age_seconds{instance_id="' in text


async def test_collector_dispatch_counts_and_metrics_server():
    async def ok(row):
        return {"reward": 1.0}

    async def broken(row):
        raise RolloutFailure("model is down", failure_class="model_error", retryable=True)

    agent = "counted_agent"
    row = {"agent_ref": {"name": agent}}
    await metrics.instrument_dispatch(ok)(row)
    with pytest.raises(RolloutFailure):
        await metrics.instrument_dispatch(broken)(row)
    assert value("gymfleet_rollouts_started_total", agent=agent, source="collector") == 2
    assert value("gymfleet_rollouts_finished_total", agent=agent, source="collector") == 1
    assert value("gymfleet_rollouts_failed_total", agent=agent, source="collector", failure_class="model_error") == 1

    security.apply_process_settings(security.settings_from_config({"fleet_token": TOKEN}, environ={}))
    try:
        async with serve_metrics("127.0.0.1", 0) as port, httpx.AsyncClient(timeout=5) as client:
            url = f"http://127.0.0.1:{port}"
            assert (await client.get(url + "/metrics")).status_code == 401
            resp = await client.get(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert resp.status_code == 200 and f'agent="{agent}"' in resp.text
            assert (await client.get(url + "/")).status_code == 200
    finally:
        security.apply_process_settings(security.SecuritySettings())
    await asyncio.sleep(0)
