"""vllm_model against real fake engines on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from omegaconf import OmegaConf

from gymfleet import transport
from tests.fakes.fake_openai import FakeOpenAI, Reply, generation_ids
from tests.fakes.live_server import live_server
from tests.fakes.server_module import load_server_module

SERVER_DIR = Path(__file__).resolve().parents[1]

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}




app_module = load_server_module(SERVER_DIR)
VLLMModel = app_module.VLLMModel
VLLMModelConfig = app_module.VLLMModelConfig

MakeClient = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as upstream:
        yield upstream


@pytest.fixture
async def fake2() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as upstream:
        yield upstream


@pytest.fixture
async def make_server(fake: FakeOpenAI) -> AsyncIterator[Callable[..., Any]]:
    def make(**overrides: Any) -> Any:
        config = {
            "name": "policy_model",
            "base_url": fake.base_url,
            "api_key": "k",
            "model": "engine",
            **overrides,
        }
        return VLLMModel(config=config)

    try:
        yield make
    finally:
        await transport.close_sessions()


@pytest.fixture
async def make_client(make_server: Callable[..., Any]) -> AsyncIterator[MakeClient]:
    """``make_client(server=None, **config)``: in-process client, own cookie jar (= own session)."""
    clients: list[httpx.AsyncClient] = []

    def make(server: Any = None, **overrides: Any) -> httpx.AsyncClient:
        app = (server or make_server(**overrides)).setup_webserver()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.aclose()


async def _responses(client: httpx.AsyncClient, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    resp = await client.post("/v1/responses", json=body)
    assert resp.status_code == status, resp.text
    return resp.json()


# ------------------------------------------------------------------------------------ /v1/responses
async def test_text_turn(fake: FakeOpenAI, make_client: MakeClient) -> None:
    body = await _responses(
        make_client(), {"input": "hi", "instructions": "be nice", "max_output_tokens": 32, "model": "x"}
    )
    assert body["output"][0]["content"][0]["text"] == "ok: hi"
    assert body["status"] == "completed" and body["max_output_tokens"] == 32
    assert body["usage"]["input_tokens"] == 2
    [chat] = fake.chat_requests()
    assert chat["model"] == "engine" and chat["max_tokens"] == 32
    assert chat["messages"] == [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]
    assert "tool_choice" not in chat and "logprobs" not in chat
    assert fake.requests[0].headers["Authorization"] == "Bearer k"


async def test_tool_call_turn_and_follow_up(fake: FakeOpenAI, make_client: MakeClient) -> None:
    client = make_client()
    fake.queue(Reply(tool_calls=[("get_weather", {"city": "sf"})]))
    first = await _responses(client, {"input": "weather?", "tools": [WEATHER_TOOL]})
    [call] = first["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "sf"}
    assert fake.chat_requests()[0]["tools"][0]["function"]["name"] == "get_weather"
    assert fake.chat_requests()[0]["tool_choice"] == "auto"

    history = [
        {"role": "user", "content": "weather?"},
        *first["output"],
        {"type": "function_call_output", "call_id": call["call_id"], "output": "cold"},
    ]
    await _responses(client, {"input": history, "tools": [WEATHER_TOOL]})
    messages = fake.chat_requests()[1]["messages"]
    assert messages[1]["tool_calls"][0]["id"] == call["call_id"]
    assert messages[2] == {"role": "tool", "tool_call_id": call["call_id"], "content": "cold"}


async def test_reasoning_parser(fake: FakeOpenAI, make_client: MakeClient) -> None:
    client = make_client(uses_reasoning_parser=True)
    fake.queue(Reply(content="4", reasoning_content="2+2"))
    body = await _responses(client, {"input": "2+2?"})
    assert [i["type"] for i in body["output"]] == ["reasoning", "message"]
    assert body["output"][0]["summary"][0]["text"] == "2+2"
    assert body["output"][1]["content"][0]["text"] == "4"


async def test_token_id_capture_with_tokenize(fake: FakeOpenAI, make_client: MakeClient) -> None:
    client = make_client(return_token_id_information=True, chat_template_kwargs={"enable_thinking": False})
    body = await _responses(client, {"input": [{"role": "user", "content": "q"}], "tools": [WEATHER_TOOL]})
    [chat] = fake.chat_requests()
    assert (
        chat["logprobs"] is True and chat["top_logprobs"] == 0 and chat["return_tokens_as_token_ids"] is True
    )
    assert "return_token_ids" not in chat
    tokenize = [r for r in fake.requests if r.path == "/tokenize"]
    assert len(tokenize) == 1  # prompt ids come from /tokenize at the base URL without /v1
    assert tokenize[0].json["chat_template_kwargs"] == {"enable_thinking": False}
    assert tokenize[0].json["tools"] == chat["tools"] and tokenize[0].json["add_generation_prompt"] is True
    last = body["output"][-1]
    assert last["prompt_token_ids"] == [100]
    assert last["generation_token_ids"] == generation_ids("ok: q")
    assert last["generation_log_probs"] == [-0.5] * len("ok: q")

    # The turn fed back as input carries the exact tokens onto the assistant message.
    await _responses(
        client,
        {"input": [{"role": "user", "content": "q"}, *body["output"], {"role": "user", "content": "again"}]},
    )
    assistant = fake.chat_requests()[1]["messages"][1]
    assert assistant["role"] == "assistant" and assistant["content"] == "ok: q"
    assert assistant["prompt_token_ids"] == [100]
    assert assistant["generation_token_ids"] == generation_ids("ok: q")


async def test_token_id_capture_with_native_token_ids(fake: FakeOpenAI, make_client: MakeClient) -> None:
    client = make_client(return_token_id_information=True, request_prompt_and_generation_token_ids=True)
    fake.queue(Reply(tool_calls=[("get_weather", '{"city":"la"}')]))
    body = await _responses(client, {"input": "w", "tools": [WEATHER_TOOL]})
    assert fake.chat_requests()[0]["return_token_ids"] is True
    assert not [r for r in fake.requests if r.path == "/tokenize"]
    last = body["output"][-1]
    assert last["type"] == "function_call"
    assert last["prompt_token_ids"] == [100] and last["generation_token_ids"] == generation_ids(
        '{"city":"la"}'
    )


async def test_token_capture_rejects_n_above_one(make_client: MakeClient) -> None:
    client = make_client(return_token_id_information=True)
    resp = await client.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "n": 2}
    )
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "n"


async def test_context_length_error_becomes_incomplete_response(
    fake: FakeOpenAI, make_client: MakeClient
) -> None:
    message = "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens."
    fake.queue(Reply(status=400, body={"object": "error", "message": message, "code": 400}))
    body = await _responses(make_client(), {"input": "long"})
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["content"][0]["text"] == ""


async def test_other_engine_400_is_typed_502(fake: FakeOpenAI, make_client: MakeClient) -> None:
    fake.queue(Reply(status=400, body={"object": "error", "message": "unknown tool parser", "code": 400}))
    resp = await make_client().post("/v1/responses", json={"input": "x"})
    assert resp.status_code == 502
    assert resp.json()["error"]["upstream_status"] == 400


async def test_unsupported_input_item_is_400(make_client: MakeClient) -> None:
    body = await _responses(make_client(), {"input": [{"type": "item_reference", "id": "x"}]}, status=400)
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == "input[0].type"


async def test_typo_is_422(make_client: MakeClient) -> None:
    resp = await make_client().post("/v1/responses", json={"input": "x", "max_tokens": 3})
    assert resp.status_code == 422 and "max_tokens" in resp.text


# ------------------------------------------------------------------------------------ /v1/chat/completions
async def test_chat_preprocessing(fake: FakeOpenAI, make_client: MakeClient) -> None:
    client = make_client(
        replace_developer_role_with_system=True,
        chat_template_kwargs={"a": 1, "b": 1},
        extra_body={"top_k": 5, "repetition_penalty": 1.1},
        sampling_overrides={"temperature": 1.0},
    )
    body = {
        "messages": [
            {"role": "developer", "content": "d"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "<think>hmm</think>answer"},
            {"role": "user", "content": "more"},
        ],
        "temperature": 0.2,
        "top_k": 7,
        "metadata": {"chat_template_kwargs": '{"b": 2}', "extra_body": '{"min_p": 0.1}'},
    }
    resp = await client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    [chat] = fake.chat_requests()
    assert chat["model"] == "engine"
    assert chat["messages"][0] == {"role": "system", "content": "d"}
    assert chat["messages"][2] == {"role": "assistant", "content": "answer", "reasoning_content": "hmm"}
    assert chat["chat_template_kwargs"] == {"a": 1, "b": 2}
    assert chat["top_k"] == 7 and chat["repetition_penalty"] == 1.1 and chat["min_p"] == 0.1
    assert chat["temperature"] == 1.0  # sampling_overrides win
    assert "metadata" not in chat


async def test_chat_reasoning_is_rewrapped_as_think_tags(fake: FakeOpenAI, make_client: MakeClient) -> None:
    fake.queue(Reply(content="4", reasoning_content="2+2"))
    resp = await make_client(uses_reasoning_parser=True).post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "q"}]}
    )
    message = resp.json()["choices"][0]["message"]
    assert message["content"] == "<think>2+2</think>4" and "reasoning_content" not in message


async def test_bad_metadata_json_is_400(make_client: MakeClient) -> None:
    resp = await make_client().post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "q"}], "metadata": {"extra_body": "{not json"}},
    )
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "metadata.extra_body"


# ------------------------------------------------------------------------------------ several engines
async def test_sessions_stick_to_one_engine(
    fake: FakeOpenAI, fake2: FakeOpenAI, make_server: Callable[..., Any], make_client: MakeClient
) -> None:
    server = make_server(base_url=[fake.base_url, fake2.base_url])
    for session in range(16):
        client = make_client(server)  # a fresh cookie jar = a fresh session
        for _turn in range(3):
            await _responses(client, {"input": f"s{session}"})
    for session in range(16):
        counts = [
            sum(1 for c in f.chat_requests() if c["messages"][0]["content"] == f"s{session}")
            for f in (fake, fake2)
        ]
        assert sorted(counts) == [0, 3], f"session {session} was split across engines: {counts}"
    assert fake.chat_requests() and fake2.chat_requests()  # 16 sessions on one engine: odds 2**-15


async def test_failover_when_an_engine_is_down(
    fake: FakeOpenAI, fake2: FakeOpenAI, make_server: Callable[..., Any], make_client: MakeClient
) -> None:
    server = make_server(base_url=[fake.base_url, fake2.base_url])
    await fake2.stop()
    for session in range(6):
        body = await _responses(make_client(server), {"input": f"s{session}"})
        assert body["output"][0]["content"][0]["text"] == f"ok: s{session}"
    assert len(fake.chat_requests()) == 6


# ------------------------------------------------------------------------------------ real client, config
async def test_official_openai_client(fake: FakeOpenAI, make_server: Callable[..., Any]) -> None:
    server = make_server(return_token_id_information=True, uses_reasoning_parser=True)
    fake.queue(
        Reply(content="", reasoning_content="need weather", tool_calls=[("get_weather", {"city": "sf"})])
    )
    async with live_server(server.setup_webserver()) as url:
        async with openai.AsyncOpenAI(
            base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=10
        ) as oai:
            response = await oai.responses.create(model="any", input="weather in sf?", tools=[WEATHER_TOOL])  # type: ignore[list-item]
            assert [item.type for item in response.output] == ["reasoning", "function_call"]
            call = response.output[1]
            assert call.type == "function_call" and json.loads(call.arguments) == {"city": "sf"}
            extra = call.model_extra or {}
            assert extra["prompt_token_ids"] == [100] and extra["generation_token_ids"]
            chat = await oai.chat.completions.create(
                model="any", messages=[{"role": "user", "content": "hey"}]
            )
            assert chat.choices[0].message.content == "ok: hey"
            models = await oai.models.list()
            assert [m.id for m in models.data] == ["engine"]


def test_shipped_config_validates() -> None:
    cfg = OmegaConf.load(SERVER_DIR / "configs" / "vllm_model.yaml")
    cfg.merge_with(
        {"policy_base_url": "http://127.0.0.1:1/v1", "policy_api_key": "k", "policy_model_name": "m"}
    )
    block = OmegaConf.to_container(cfg.policy_model.responses_api_models.vllm_model, resolve=True)
    assert isinstance(block, dict)
    config = VLLMModelConfig.model_validate(block)
    assert (
        config.entrypoint == "app.py" and config.model == "m" and config.return_token_id_information is False
    )


def test_empty_base_url_list_is_rejected() -> None:
    with pytest.raises(ValueError, match="base_url is an empty list"):
        VLLMModel(config={"name": "p", "base_url": [], "model": "m"})
