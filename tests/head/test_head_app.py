"""Head routes in-process (real app, real routing, no sockets)."""

from __future__ import annotations

import json

import httpx
import pytest
import yaml

from gymfleet.head.app import Head, build_head_app

STATIC = {
    "head_server": {"host": "127.0.0.1", "port": 11000},
    "policy_api_key": "sk-very-secret",
    "example_resources": {"resources_servers": {"example_single_tool_call": {
        "entrypoint": "app.py", "domain": "agent", "host": "127.0.0.1", "port": 8080}}},
}


def reg_body(name: str, port: int, **extra):
    return {"name": name, "server_type": "responses_api_models", "impl": "vllm_model", "host": "10.0.0.2",
            "port": port, "url": f"http://10.0.0.2:{port}", "pid": 42, "block": {"entrypoint": "app.py",
                                                                                "api_key": "sk-x"}, **extra}


@pytest.fixture
async def client():
    head = Head(STATIC, lease_s=0.3, evict_after_s=0.3)
    app = build_head_app(head)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://head") as c:
            yield c


async def test_root_and_empty_instances(client):
    assert (await client.get("/")).json() == {"status": "ok"}
    assert (await client.get("/server_instances")).json() == []


async def test_global_config_is_json_string_yaml_redacted_with_remote_blocks(client):
    await client.post("/registry/register", json=reg_body("policy_model", 8000))
    body = (await client.get("/global_config_dict_yaml")).content
    config = yaml.safe_load(json.loads(body))
    assert config["policy_api_key"] == "****"
    block = config["policy_model"]["responses_api_models"]["vllm_model"]
    assert block["host"] == "10.0.0.2" and block["port"] == 8000 and block["api_key"] == "****"
    assert config["example_resources"]["resources_servers"]["example_single_tool_call"]["port"] == 8080


async def test_register_heartbeat_deregister(client):
    reg = (await client.post("/registry/register", json=reg_body("m", 8001))).json()
    assert reg["lease_s"] == 0.3 and reg["heartbeat_interval_s"] > 0
    iid = reg["instance_id"]
    assert (await client.post("/registry/heartbeat", json={"instance_id": iid})).status_code == 200
    found = (await client.get("/registry/instances", params={"name": "m"})).json()
    assert [i["url"] for i in found["instances"]] == ["http://10.0.0.2:8001"]
    assert "example_resources" in found["names"] and "m" in found["names"]
    assert (await client.post("/registry/deregister", json={"instance_id": iid})).json() == {"ok": True}
    miss = await client.post("/registry/heartbeat", json={"instance_id": iid})
    assert miss.status_code == 404 and miss.json()["error"]["type"] == "unknown_instance"


async def test_lease_expiry_marks_unhealthy_via_sweeper(client):
    import asyncio

    await client.post("/registry/register", json=reg_body("m", 8002))
    await asyncio.sleep(0.5)
    rows = (await client.get("/server_instances")).json()
    assert rows[0]["status"] == "unhealthy"
    await asyncio.sleep(0.5)
    assert (await client.get("/server_instances")).json() == []  # evicted


async def test_bad_registrations_are_422(client):
    assert (await client.post("/registry/register", json={"name": "x"})).status_code == 422
    assert (await client.post("/registry/register", json={**reg_body("x", 1), "port": 70000})).status_code == 422
    assert (await client.post("/registry/heartbeat", content=b"nope")).status_code == 422
