"""The HTTP adapter: real ServerClient, a small real agent server on 127.0.0.1, typed failures."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from gymfleet import transport
from gymfleet.client import ServerClient
from gymfleet.rollouts import OutputPaths, RolloutCollector, RolloutFailure, make_aggregate, make_dispatch

from .helpers import keys, make_config, read_jsonl, write_jsonl


def _error(status: int, upstream_type: str | None, err_type: str = "upstream_status") -> web.Response:
    body = {
        "error": {
            "type": err_type,
            "message": f"upstream said {status}",
            "server": "agent-instance-1",
            "upstream_server": {"responses_api_models": "policy_model", "resources_servers": "env"}.get(
                upstream_type or ""
            ),
            "upstream_server_type": upstream_type,
            "status": status,
        }
    }
    return web.json_response(body, status=status)


async def _run(request: web.Request) -> web.Response:
    row = await request.json()
    mode = row.get("mode", "ok")
    if mode == "ok":
        return web.json_response({**row, "response": {"usage": {"input_tokens": 3}}, "reward": 1.0})
    if mode == "model_502":
        return _error(502, "responses_api_models")
    if mode == "env_500":
        return _error(500, "resources_servers")
    if mode == "agent_500":
        return _error(500, None, "internal")
    if mode == "rate_429":
        response = _error(429, "responses_api_models")
        response.headers["Retry-After"] = "7"
        return response
    if mode == "timeout_504":
        return _error(504, "resources_servers", "upstream_timeout")
    if mode == "validation_422":
        return _error(422, None, "validation")
    if mode == "not_json":
        return web.Response(text="<html>oops</html>", status=200)
    if mode == "plain_503":
        return web.Response(text="Service Unavailable", status=503)
    return web.json_response({"response": {}})  # no reward


async def _aggregate(request: web.Request) -> web.Response:
    body = await request.json()
    n = len(body["verify_responses"])
    return web.json_response(
        {"group_level_metrics": [], "agent_metrics": {"from_agent": n}, "key_metrics": {}}
    )


@contextlib.asynccontextmanager
async def agent_server(with_aggregate: bool) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_post("/run", _run)
    if with_aggregate:
        app.router.add_post("/aggregate_metrics", _aggregate)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def _client(ports: dict[str, int]) -> ServerClient:
    config = {
        name: {"responses_api_agents": {"simple_agent": {"host": "127.0.0.1", "port": port}}}
        for name, port in ports.items()
    }
    return ServerClient(config, retry=transport.NO_RETRY, late_binding_timeout_s=0.1)


@pytest.fixture(autouse=True)
async def _close_sessions() -> AsyncIterator[None]:
    yield
    await transport.close_sessions()


def _row(mode: str) -> dict[str, Any]:
    return {"responses_create_params": {"input": "hi"}, "agent_ref": {"name": "agent"}, "mode": mode}


@pytest.mark.parametrize(
    ("mode", "failure_class", "retryable", "terminal", "server"),
    [
        ("model_502", "model_error", True, False, "policy_model"),
        ("env_500", "environment_error", True, False, "env"),
        ("agent_500", "agent_error", True, False, "agent-instance-1"),
        ("rate_429", "rate_limited", True, False, "policy_model"),
        ("timeout_504", "timeout", True, False, "env"),
        ("validation_422", "agent_error", False, True, "agent-instance-1"),
        ("plain_503", "agent_error", True, False, "agent"),
        ("not_json", "invalid_response", False, False, "agent"),
    ],
)
async def test_error_answers_become_typed_failures(
    mode: str, failure_class: str, retryable: bool, terminal: bool, server: str
) -> None:
    async with agent_server(with_aggregate=False) as port:
        dispatch = make_dispatch(_client({"agent": port}))
        with pytest.raises(RolloutFailure) as info:
            await dispatch(_row(mode))
    failure = info.value
    assert (failure.failure_class, failure.retryable, failure.terminal) == (
        failure_class,
        retryable,
        terminal,
    )
    assert failure.server == server
    if mode == "rate_429":
        assert failure.retry_after_s == 7.0
    if mode == "plain_503":
        assert "Service Unavailable" in str(failure)


async def test_success_and_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    async with agent_server(with_aggregate=False) as port:
        dispatch = make_dispatch(_client({"agent": port, "gone": closed_port}))
        answer = await dispatch(_row("ok"))
        assert answer["reward"] == 1.0 and answer["mode"] == "ok"
        gone = {**_row("ok"), "agent_ref": {"name": "gone"}}
        with pytest.raises(RolloutFailure) as info:
            await dispatch(gone)
    assert info.value.failure_class == "connection_error" and info.value.retryable
    # An unknown name: the client already waited for it to appear, so the collector does not retry.
    async with agent_server(with_aggregate=False) as port:
        dispatch = make_dispatch(_client({"agent": port}))
        with pytest.raises(RolloutFailure) as info:
            await dispatch({**_row("ok"), "agent_ref": {"name": "agnet"}})
    assert info.value.failure_class == "connection_error" and not info.value.retryable
    assert "agnet" in str(info.value)


async def test_collector_over_http_with_agent_and_local_aggregation(tmp_path: Path) -> None:
    rows = [
        {"responses_create_params": {"input": "a"}, "mode": "ok"},
        {"responses_create_params": {"input": "b"}, "mode": "validation_422"},
        {"responses_create_params": {"input": "c"}, "mode": "ok", "agent_ref": {"name": "with_metrics"}},
        {"responses_create_params": {"input": "d"}, "mode": "no_reward"},
    ]
    write_jsonl(tmp_path / "input.jsonl", rows)
    config = make_config(tmp_path, agent_name="plain", num_repeats=2, max_failure_rate=1.0)
    async with agent_server(with_aggregate=False) as plain, agent_server(with_aggregate=True) as rich:
        client = _client({"plain": plain, "with_metrics": rich})
        collector = RolloutCollector(config, make_dispatch(client), aggregate=make_aggregate(client))
        summary = await collector.run(handle_signals=False)

    paths = OutputPaths.from_output(config.output_jsonl_fpath)
    assert sorted(keys(read_jsonl(paths.output))) == [(0, 0), (0, 1), (2, 0), (2, 1)]
    assert summary.failed_by_class == {"agent_error": 2, "invalid_response": 2}
    assert summary.retried == 0  # a 422 and a 200 without reward are not retried
    aggregate = {e["agent_ref"]["name"]: e for e in orjson.loads(paths.aggregate_metrics.read_bytes())}
    assert aggregate["with_metrics"]["agent_metrics"] == {"from_agent": 2}
    # "plain" has no /aggregate_metrics: computed locally, over successes only.
    assert aggregate["plain"]["agent_metrics"]["num_rollouts"] == 2
    assert aggregate["plain"]["key_metrics"]["mean/reward"] == 1.0
