"""openai_model against a real fake upstream on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from omegaconf import OmegaConf

from gymfleet import transport
from tests.fakes.fake_openai import FakeOpenAI, Reply
from tests.fakes.live_server import live_server
from tests.fakes.server_module import load_server_module

SERVER_DIR = Path(__file__).resolve().parents[1]




app_module = load_server_module(SERVER_DIR)
OpenAIModel = app_module.OpenAIModel
OpenAIModelConfig = app_module.OpenAIModelConfig


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as upstream:
        yield upstream


@pytest.fixture
async def make_client(fake: FakeOpenAI) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def make(**overrides: Any) -> httpx.AsyncClient:
        config = {
            "name": "policy_model",
            "openai_base_url": fake.base_url,
            "openai_api_key": "sk-test",
            "openai_model": "gpt-test",
            **overrides,
        }
        server = OpenAIModel(config=config)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=server.setup_webserver()), base_url="http://127.0.0.1"
        )
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.aclose()
        await transport.close_sessions()


async def test_responses_pass_through(
    fake: FakeOpenAI, make_client: Callable[..., httpx.AsyncClient]
) -> None:
    client = make_client(
        extra_body={"temperature": 0.9, "service_tier": "flex"},
        openai_default_headers={"X-Team": "rl"},
    )
    resp = await client.post("/v1/responses", json={"input": "hi", "temperature": 0.3, "model": "ignored"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["output"][0]["content"][0]["text"] == "ok: hi"
    [recorded] = fake.requests
    assert recorded.path == "/v1/responses"
    # Only the fields the caller set, over extra_body; model forced.
    assert recorded.json == {"input": "hi", "temperature": 0.3, "model": "gpt-test", "service_tier": "flex"}
    assert recorded.headers["Authorization"] == "Bearer sk-test"
    assert recorded.headers["X-Team"] == "rl"


async def test_chat_completions_pass_through(
    fake: FakeOpenAI, make_client: Callable[..., httpx.AsyncClient]
) -> None:
    client = make_client()
    resp = await client.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "yo"}], "top_k": 5}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "ok: yo"
    [recorded] = fake.requests
    assert recorded.path == "/v1/chat/completions"
    assert recorded.json == {"messages": [{"role": "user", "content": "yo"}], "top_k": 5, "model": "gpt-test"}


async def test_drop_input_reasoning_items(
    fake: FakeOpenAI, make_client: Callable[..., httpx.AsyncClient]
) -> None:
    client = make_client(drop_input_reasoning_items="true")
    items = [
        {"role": "user", "content": "q"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a"}]},
    ]
    resp = await client.post("/v1/responses", json={"input": items})
    assert resp.status_code == 200, resp.text
    assert [i.get("type") for i in fake.requests[0].json["input"]] == [None, "message"]


async def test_typo_in_request_is_422_naming_the_field(make_client: Callable[..., httpx.AsyncClient]) -> None:
    resp = await make_client().post("/v1/responses", json={"input": "x", "temprature": 1})
    assert resp.status_code == 422
    assert "temprature" in resp.text


async def test_upstream_error_status_is_typed_502(
    fake: FakeOpenAI, make_client: Callable[..., httpx.AsyncClient]
) -> None:
    fake.queue(Reply(status=400, body={"error": {"message": "bad model param"}}))
    resp = await make_client().post("/v1/responses", json={"input": "x"})
    assert resp.status_code == 502
    error = resp.json()["error"]
    assert error["type"] == "upstream_status" and error["upstream_status"] == 400
    assert "bad model param" in error["message"] and error["server"] == "policy_model"


async def test_unreachable_upstream_is_typed_502(make_client: Callable[..., httpx.AsyncClient]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    client = make_client(openai_base_url=f"http://127.0.0.1:{dead_port}/v1")
    resp = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 502
    assert resp.json()["error"]["type"] == "upstream_connect"


async def test_wrong_base_url_is_typed_502(
    fake: FakeOpenAI, make_client: Callable[..., httpx.AsyncClient]
) -> None:
    client = make_client(openai_base_url=f"http://127.0.0.1:{fake.port}")  # missing /v1: the fake answers 404
    resp = await client.post("/v1/responses", json={"input": "x"})
    assert resp.status_code == 502
    assert resp.json()["error"]["upstream_status"] == 404


async def test_non_openai_answer_is_typed_502(
    fake: FakeOpenAI, make_client: Callable[..., httpx.AsyncClient]
) -> None:
    fake.queue(Reply(status=200, body={"not": "a response"}))
    resp = await make_client().post("/v1/responses", json={"input": "x"})
    assert resp.status_code == 502
    error = resp.json()["error"]
    assert error["type"] == "upstream_error" and "not a valid Response" in error["message"]


async def test_max_concurrent_requests(
    fake: FakeOpenAI, make_client: Callable[..., httpx.AsyncClient]
) -> None:
    fake.queue(*[Reply(content="slow", delay_s=0.1) for _ in range(4)])
    client = make_client(max_concurrent_requests=2)
    results = await asyncio.gather(*[client.post("/v1/responses", json={"input": "x"}) for _ in range(4)])
    assert all(r.status_code == 200 for r in results)
    assert fake.max_in_flight == 2


async def test_official_openai_client(fake: FakeOpenAI) -> None:
    server = OpenAIModel(
        config={
            "name": "policy_model",
            "openai_base_url": fake.base_url,
            "openai_api_key": "sk-test",
            "openai_model": "gpt-test",
        }
    )
    fake.queue(Reply(tool_calls=[("get_weather", {"city": "sf"})]))
    try:
        async with live_server(server.setup_webserver()) as url:
            async with openai.AsyncOpenAI(
                base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=10
            ) as oai:
                response = await oai.responses.create(model="any", input="weather in sf?")
                assert response.output[0].type == "function_call"
                assert response.output[0].name == "get_weather"
                chat = await oai.chat.completions.create(
                    model="any", messages=[{"role": "user", "content": "hey"}]
                )
                assert chat.choices[0].message.content == "ok: hey"
                models = await oai.models.list()
                assert [m.id for m in models.data] == ["gpt-test"]
    finally:
        await transport.close_sessions()


def test_shipped_config_validates() -> None:
    cfg = OmegaConf.load(SERVER_DIR / "configs" / "openai_model.yaml")
    cfg.merge_with(
        {"policy_base_url": "http://127.0.0.1:1/v1", "policy_api_key": "k", "policy_model_name": "m"}
    )
    block = OmegaConf.to_container(cfg.policy_model.responses_api_models.openai_model, resolve=True)
    assert isinstance(block, dict)
    config = OpenAIModelConfig.model_validate(block)
    assert config.entrypoint == "app.py"
    assert config.openai_model == "m" and config.drop_input_reasoning_items is False
