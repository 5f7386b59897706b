"""In-process apps of every server kind (head, resources, agent, model) for security tests: real code, no sockets."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Route

from gymfleet import transport as gymfleet_transport
from gymfleet.client import ServerClient
from gymfleet.head.app import Head, build_head_app
from resources_servers.example_single_tool_call.app import ExampleSingleToolCallServer
from responses_api_agents.simple_agent.app import SimpleAgent
from responses_api_models.scripted_model.app import ScriptedModel

TOKEN = "fleet-token-0123456789abcdef"  # pragma: allowlist secret
API_KEY = "sk-secret-api-key-9876543210"  # pragma: allowlist secret

RESOURCES = "example_single_tool_call"
AGENT = "example_single_tool_call_simple_agent"
MODEL = "policy_model"


def fleet_config(**extra: Any) -> dict[str, Any]:
    """A fleet config without a head address (peers resolve nowhere: calls fail fast with a typed 502)."""
    return {
        "policy_api_key": API_KEY,
        RESOURCES: {"resources_servers": {"example_single_tool_call": {"entrypoint": "app.py", "domain": "agent"}}},
        AGENT: {"responses_api_agents": {"simple_agent": {
            "entrypoint": "app.py",
            "resources_server": {"type": "resources_servers", "name": RESOURCES},
            "model_server": {"type": "responses_api_models", "name": MODEL}}}},
        MODEL: {"responses_api_models": {"scripted_model": {"entrypoint": "app.py", "model": "scripted",
                                                            "api_key": API_KEY}}},
        **extra,
    }


def _client(config: dict[str, Any]) -> ServerClient:
    return ServerClient(config, late_binding_timeout_s=0.05)


def server_apps(config: dict[str, Any]) -> dict[str, FastAPI]:
    """The FastAPI app of each server kind, built from ``config`` exactly as a server process builds it."""
    def block(name: str, kind: str, impl: str) -> dict[str, Any]:
        return {**config[name][kind][impl], "name": name}

    resources = ExampleSingleToolCallServer(config=block(RESOURCES, "resources_servers", "example_single_tool_call"),
                                            global_config=config, server_client=_client(config))
    agent = SimpleAgent(config=block(AGENT, "responses_api_agents", "simple_agent"), global_config=config,
                        server_client=_client(config))
    model = ScriptedModel(config=block(MODEL, "responses_api_models", "scripted_model"), global_config=config,
                          server_client=_client(config))
    return {RESOURCES: resources.setup_webserver(), AGENT: agent.setup_webserver(), MODEL: model.setup_webserver()}


def head_app(config: dict[str, Any]) -> tuple[Head, FastAPI]:
    head = Head(config, lease_s=5.0, evict_after_s=5.0)
    return head, build_head_app(head)


@contextlib.asynccontextmanager
async def asgi_client(app: FastAPI, headers: dict[str, str] | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client calling ``app`` in-process, with the app's lifespan running."""
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers or {}) as c:
                yield c
    finally:
        await gymfleet_transport.close_sessions()  # the apps' own outgoing calls (peers, scrapes)


def routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """Every (method, concrete path) the app serves, path parameters filled with a dummy value."""
    for route in app.routes:
        if not isinstance(route, APIRoute | Route):
            continue
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                yield method, path
