"""The fleet token: every route of every server kind and of the head refuses a missing or wrong token."""

from __future__ import annotations

import logging

import pytest

from gymfleet.auth import warn_if_exposed
from gymfleet.security import settings_from_config
from tests.security.apps import TOKEN, asgi_client, fleet_config, head_app, routes, server_apps

WRONG = {"Authorization": "Bearer not-the-token"}
RIGHT = {"Authorization": f"Bearer {TOKEN}"}


def all_apps(config):
    apps = dict(server_apps(config))
    apps["head_server"] = head_app(config)[1]
    return apps


@pytest.mark.parametrize("name", ["example_single_tool_call", "example_single_tool_call_simple_agent",
                                  "policy_model", "head_server"])
async def test_every_route_refuses_missing_or_wrong_token(name):
    app = all_apps(fleet_config(fleet_token=TOKEN))[name]
    checked = 0
    async with asgi_client(app) as client:
        for method, path in routes(app):
            if (method, path) == ("GET", "/"):
                continue
            for headers in ({}, WRONG, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
                resp = await client.request(method, path, headers=headers, json={})
                assert resp.status_code == 401, (name, method, path, headers, resp.text)
                error = resp.json()["error"]
                assert error["type"] == "unauthorized" and "Authorization: Bearer" in error["message"]
                assert TOKEN not in resp.text
                assert resp.headers["www-authenticate"].startswith("Bearer")
            checked += 1
        assert checked >= 4  # the schema routes, /docs, /openapi.json, /metrics and the server's own routes
        # liveness stays open; the right token gets past the check
        assert (await client.get("/")).json() == {"status": "ok"}
        assert (await client.get("/metrics", headers=RIGHT)).status_code == 200
        assert (await client.get("/openapi.json", headers=RIGHT)).status_code == 200


async def test_right_token_reaches_the_handlers():
    apps = all_apps(fleet_config(fleet_token=TOKEN))
    async with asgi_client(apps["example_single_tool_call"], headers=RIGHT) as client:
        resp = await client.post("/get_weather", json={"city": "sf"})
        assert resp.status_code == 200 and "sf" in resp.text
    async with asgi_client(apps["head_server"], headers=RIGHT) as client:
        assert (await client.get("/server_instances")).json() == []


async def test_no_token_configured_means_open_fleet():
    app = server_apps(fleet_config())["example_single_tool_call"]
    async with asgi_client(app) as client:
        assert (await client.post("/get_weather", json={"city": "sf"})).status_code == 200
        assert (await client.get("/metrics")).status_code == 200


async def test_metrics_can_be_public_when_configured():
    app = head_app(fleet_config(fleet_token=TOKEN, metrics_require_token=False))[1]
    async with asgi_client(app) as client:
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/server_instances")).status_code == 401


def test_environment_token_wins_over_config():
    assert settings_from_config({"fleet_token": "from-config"}, environ={}).token == "from-config"
    env = {"GYMFLEET_TOKEN": "from-env"}
    assert settings_from_config({"fleet_token": "from-config"}, environ=env).token == "from-env"
    assert settings_from_config({}, environ={"GYMFLEET_TOKEN": " "}).token is None
    settings = settings_from_config({"fleet_token": TOKEN}, environ={})
    assert TOKEN in settings.secret_values and TOKEN not in repr(settings)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_exposed_server_without_token_warns():
    handler = _Records()
    logger = logging.getLogger("gymfleet.auth")
    logger.addHandler(handler)
    try:
        assert warn_if_exposed("0.0.0.0", None, what="server 'x'") is True
        assert warn_if_exposed("127.0.0.1", None, what="server 'x'") is False
        assert warn_if_exposed("0.0.0.0", TOKEN, what="server 'x'") is False
    finally:
        logger.removeHandler(handler)
    assert len(handler.lines) == 1 and "WITHOUT a fleet token" in handler.lines[0]
