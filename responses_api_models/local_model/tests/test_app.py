"""local_model with the real SmolLM2-135M weights: short, seeded generations through the HTTP API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from responses_api_models.local_model.tests.conftest import skip_without_extra

skip_without_extra()

import torch  # noqa: E402

from tests.fakes.live_server import live_server  # noqa: E402

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}
QUESTION = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture
async def client(local_server: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = local_server.setup_webserver()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", timeout=120
    ) as c:
        yield c


async def chat(client: httpx.AsyncClient, status: int = 200, **body: Any) -> dict[str, Any]:
    resp = await client.post("/v1/chat/completions", json={"messages": QUESTION, **body})
    assert resp.status_code == status, resp.text
    return resp.json()


@pytest.mark.slow  # importing transformers' Llama alone takes 5-40 s on a busy 2-core machine
def test_forward_pass_matches_transformers(weights_dir, local_server) -> None:
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    cfg = json.loads((weights_dir / "config.json").read_text())
    tensors = load_file(str(weights_dir / "model.safetensors"))
    hf_config = transformers.LlamaConfig(
        **{
            k: cfg[k]
            for k in (
                "vocab_size",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "rms_norm_eps",
                "max_position_embeddings",
                "tie_word_embeddings",
            )
        },
        rope_theta=cfg["rope_theta"],
    )
    with torch.device("meta"):  # no random init of 135M weights: they are all assigned below
        hf = transformers.LlamaForCausalLM(hf_config).eval()
    q, kv = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
    state = {"model.embed_tokens.weight": tensors["embed"], "model.norm.weight": tensors["norm"]}
    for i in range(cfg["num_hidden_layers"]):
        p, t = f"model.layers.{i}.", f"layers.{i}."
        wq, wk, wv = tensors[t + "qkv"].split([q, kv, kv])
        gate, up = tensors[t + "gate_up"].chunk(2)
        state |= {
            p + "self_attn.q_proj.weight": wq,
            p + "self_attn.k_proj.weight": wk,
            p + "self_attn.v_proj.weight": wv,
            p + "self_attn.o_proj.weight": tensors[t + "o"],
            p + "mlp.gate_proj.weight": gate,
            p + "mlp.up_proj.weight": up,
            p + "mlp.down_proj.weight": tensors[t + "down"],
            p + "input_layernorm.weight": tensors[t + "input_norm"],
            p + "post_attention_layernorm.weight": tensors[t + "post_norm"],
        }
    hf.load_state_dict(state, strict=False, assign=True)
    hf.lm_head.weight = hf.model.embed_tokens.weight
    hf.model.rotary_emb = type(hf.model.rotary_emb)(hf_config)  # its buffers are not in the state dict
    lm = local_server.lm
    short, long = lm.encode("Hello there"), lm.encode("The quick brown fox jumps over the lazy dog because")
    model = lm.model
    cache = model.new_cache(max_rows=2, max_columns=64)
    seqs = []
    for ids in (long, short):  # two rows of different lengths: the short one is left-padded
        logits, keys, values = model.prefill(ids)
        cache.add_row(keys, values)
        seqs.append([*ids, int(logits.argmax())])
        with torch.no_grad():
            ref = hf(torch.tensor([ids])).logits[0, -1]
        assert torch.allclose(logits, ref, atol=2e-3), (logits - ref).abs().max()
    step = model.decode(torch.tensor([s[-1] for s in seqs]), torch.tensor([len(s) - 1 for s in seqs]), cache)
    for row, seq in enumerate(seqs):
        with torch.no_grad():
            ref = hf(torch.tensor([seq])).logits[0, -1]
        assert torch.allclose(step[row], ref, atol=2e-3), (step[row] - ref).abs().max()


async def test_greedy_chat_completion_with_token_ids(client) -> None:
    body = await chat(client, max_tokens=8, temperature=0)
    [choice] = body["choices"]
    message = choice["message"]
    assert "5" in message["content"]  # SmolLM2 answers "2 + 3 = 5"
    assert body["object"] == "chat.completion" and body["model"] == "SmolLM2-135M-Instruct"
    gen, lps = message["generation_token_ids"], message["generation_log_probs"]
    assert 1 <= len(gen) <= 8 and len(lps) == len(gen) and all(lp <= 0 for lp in lps)
    assert message["prompt_token_ids"][-4:] == [1, 520, 9531, 198]  # ends "<|im_start|>assistant\n"
    assert body["usage"]["completion_tokens"] == len(gen)
    assert body["usage"]["prompt_tokens"] == len(message["prompt_token_ids"])
    assert choice["finish_reason"] in ("stop", "length")


async def test_seeded_sampling_is_reproducible(client) -> None:
    first = await chat(client, max_tokens=6, temperature=1.0, seed=42)
    again = await chat(client, max_tokens=6, temperature=1.0, seed=42)
    assert (
        first["choices"][0]["message"]["generation_token_ids"]
        == again["choices"][0]["message"]["generation_token_ids"]
    )


async def test_concurrent_requests_share_decode_steps(client, local_server) -> None:
    before = local_server.lm.engine.stats["decode_steps"]
    bodies = await asyncio.gather(
        *[chat(client, max_tokens=5, temperature=0.7, seed=s, ignore_eos=True) for s in range(4)]
    )
    assert all(len(b["choices"][0]["message"]["generation_token_ids"]) == 5 for b in bodies)
    assert local_server.lm.engine.stats["max_rows"] >= 2
    assert local_server.lm.engine.stats["decode_steps"] - before < 4 * 4  # fewer steps than one by one


async def test_logprobs_in_openai_format(client) -> None:
    body = await chat(client, max_tokens=3, temperature=0, logprobs=True, top_logprobs=2)
    entries = body["choices"][0]["logprobs"]["content"]
    assert len(entries) == len(body["choices"][0]["message"]["generation_token_ids"])
    for entry in entries:
        assert entry["logprob"] <= 0 and len(entry["top_logprobs"]) == 2
        assert entry["top_logprobs"][0]["logprob"] >= entry["logprob"] - 1e-6  # greedy: the top token


async def test_responses_turn_with_tools_and_exact_multi_turn_tokens(client) -> None:
    first = await client.post(
        "/v1/responses",
        json={
            "input": [{"role": "user", "content": "What is the weather in Paris?"}],
            "tools": [WEATHER_TOOL],
            "max_output_tokens": 3,
            "temperature": 0,
        },
    )
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["object"] == "response" and body["output"]
    assert all(item["type"] in ("message", "function_call") for item in body["output"])
    last = body["output"][-1]
    prompt, generated = last["prompt_token_ids"], last["generation_token_ids"]
    # Feed the turn back: the next prompt holds exactly the tokens sampled in the first turn.
    follow = [{"role": "user", "content": "What is the weather in Paris?"}, *body["output"]]
    if last["type"] == "function_call":
        follow.append({"type": "function_call_output", "call_id": last["call_id"], "output": "sunny"})
    follow.append({"role": "user", "content": "Thanks"})
    second = await client.post(
        "/v1/responses",
        json={"input": follow, "tools": [WEATHER_TOOL], "max_output_tokens": 1, "temperature": 0},
    )
    assert second.status_code == 200, second.text
    next_prompt = second.json()["output"][-1]["prompt_token_ids"]
    assert next_prompt[: len(prompt) + len(generated)] == prompt + generated


@pytest.mark.parametrize(
    "body, param",
    [
        ({"n": 2}, "n"),
        ({"temperature": 5}, "temperature"),
        ({"stream": True}, "stream"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"top_p": 0}, "top_p"),
        ({"seed": "x"}, "seed"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ],
)
async def test_bad_requests_are_400_naming_the_param(client, body, param) -> None:
    result = await chat(client, status=400, **body)
    assert result["error"]["type"] == "invalid_request_error" and result["error"]["param"] == param


async def test_prompt_filling_the_context_answers_empty_with_length(app_module, weights_dir) -> None:
    server = app_module.LocalModel(config={"name": "m", "max_context_tokens": 40, "max_batch_tokens": 40})
    try:
        app = server.setup_webserver()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as c:
            body = await chat(c, messages=[{"role": "user", "content": "word " * 60}])
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["choices"][0]["message"]["generation_token_ids"] == []
    finally:
        server.close()


async def test_full_queue_answers_429_and_timeout_503(app_module, weights_dir) -> None:
    busy = app_module.LocalModel(config={"name": "m", "max_batch_size": 1, "max_queue": 1})
    slow = app_module.LocalModel(config={"name": "m", "request_timeout_s": 0.01})
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=busy.setup_webserver()),
            base_url="http://127.0.0.1",
            timeout=120,
        ) as c:
            results = await asyncio.gather(
                *[
                    c.post(
                        "/v1/chat/completions",
                        json={"messages": QUESTION, "max_tokens": 4, "temperature": 0, "ignore_eos": True},
                    )
                    for _ in range(3)
                ]
            )
        codes = sorted(r.status_code for r in results)
        assert codes[0] == 200 and codes[-1] == 429, codes
        refused = next(r for r in results if r.status_code == 429)
        assert (
            refused.headers["Retry-After"] == "1" and refused.json()["error"]["type"] == "server_overloaded"
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=slow.setup_webserver()),
            base_url="http://127.0.0.1",
            timeout=120,
        ) as c:
            body = await chat(c, status=503, max_tokens=200, ignore_eos=True)
        assert body["error"]["type"] == "timeout"
    finally:
        busy.close()
        slow.close()


async def test_official_openai_client_works_unchanged(local_server) -> None:
    async with live_server(local_server.setup_webserver()) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        try:
            models = await client.models.list()
            assert [m.id for m in models.data] == ["SmolLM2-135M-Instruct"]
            completion = await client.chat.completions.create(
                model="SmolLM2-135M-Instruct", messages=QUESTION, max_tokens=8, temperature=0, seed=1
            )
            assert "5" in (completion.choices[0].message.content or "")
            assert completion.usage is not None and completion.usage.completion_tokens >= 1
            response = await client.responses.create(
                model="SmolLM2-135M-Instruct", input="What is 2 + 3?", max_output_tokens=8, temperature=0
            )
            assert "5" in response.output_text
        finally:
            await client.close()
