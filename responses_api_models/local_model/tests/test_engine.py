"""Batching engine and KV cache on a tiny random Llama (no weights): batched == alone, bounds, cancel."""

from __future__ import annotations

import asyncio

import pytest

from responses_api_models.local_model.tests.conftest import skip_without_extra

skip_without_extra()

import torch  # noqa: E402

from gymfleet.local_model import (  # noqa: E402
    EngineClosedError,
    EngineFailedError,
    EngineOverloadedError,
    GenerationEngine,
    LlamaConfig,
    LlamaModel,
    SamplingParams,
)

CONFIG = LlamaConfig(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    max_position_embeddings=1024,
    tie_word_embeddings=True,
)


def tiny_model() -> LlamaModel:
    g = torch.Generator().manual_seed(0)
    c = CONFIG

    def w(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.3

    qkv_rows = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim
    tensors = {"embed": w(c.vocab_size, c.hidden_size), "norm": torch.ones(c.hidden_size)}
    for i in range(c.num_layers):
        tensors |= {
            f"layers.{i}.input_norm": 1 + w(c.hidden_size) * 0.1,
            f"layers.{i}.qkv": w(qkv_rows, c.hidden_size),
            f"layers.{i}.o": w(c.hidden_size, c.num_heads * c.head_dim),
            f"layers.{i}.post_norm": 1 + w(c.hidden_size) * 0.1,
            f"layers.{i}.gate_up": w(2 * c.intermediate_size, c.hidden_size),
            f"layers.{i}.down": w(c.hidden_size, c.intermediate_size),
        }
    return LlamaModel(c, tensors, dtype=torch.float32)


def reference_greedy(model: LlamaModel, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding by re-running the full sequence each step (no cache): the ground truth."""
    seq = list(prompt)
    for _ in range(n):
        logits, _, _ = model.prefill(seq)
        seq.append(int(logits.argmax()))
    return seq[len(prompt) :]


@pytest.fixture
def model() -> LlamaModel:
    return tiny_model()


@pytest.fixture
async def make_engine(model: LlamaModel):
    engines: list[GenerationEngine] = []

    def make(**kwargs) -> GenerationEngine:
        engine = GenerationEngine(model, **{"max_context_tokens": 512, "max_batch_tokens": 4096, **kwargs})
        engines.append(engine)
        return engine

    try:
        yield make
    finally:
        for engine in engines:
            engine.close(timeout_s=5.0)


def greedy(n: int) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0)


async def test_batched_rows_of_different_lengths_match_unbatched_reference(model, make_engine) -> None:
    # Prompts of different lengths and answers of different lengths: rows join left-padded, leave at different
    # steps, and a 300-token prompt forces the cache to shift and grow past its initial 256 columns.
    engine = make_engine(max_batch_size=4)
    prompts = [[1, 2, 3], [5] * 40, [7, 8], list(range(1, 97)) * 3 + [4] * 12, [9] * 17, [3, 1]]
    lengths = [6, 3, 9, 5, 1, 7]
    results = await asyncio.wait_for(
        asyncio.gather(*[engine.generate(p, greedy(n)) for p, n in zip(prompts, lengths, strict=True)]), 60
    )
    for prompt, n, result in zip(prompts, lengths, results, strict=True):
        assert result.token_ids == reference_greedy(model, prompt, n)
        assert result.finish_reason == "length" and result.prompt_tokens == len(prompt)
        assert len(result.logprobs) == n and all(lp <= 0.0 for lp in result.logprobs)
    assert engine.stats["max_rows"] > 1  # they really shared decode steps
    assert engine.active_rows == 0 and engine.cache.rows == 0


async def test_row_joins_after_the_cache_grew_during_decoding(model, make_engine) -> None:
    engine = make_engine(max_batch_size=2)
    long_prompt = [5, 6, 7] * 83  # 249 tokens: decoding passes the initial 256 columns and grows the cache
    first = asyncio.ensure_future(engine.generate(long_prompt, greedy(30)))
    for _ in range(3000):
        if engine.stats["decode_steps"] >= 10 or first.done():
            break
        await asyncio.sleep(0.005)
    assert engine.cache.capacity > 256
    second = await asyncio.wait_for(engine.generate([1, 2, 3], greedy(4)), 30)
    assert second.token_ids == reference_greedy(model, [1, 2, 3], 4)
    assert (await asyncio.wait_for(first, 30)).token_ids == reference_greedy(model, long_prompt, 30)


async def test_stop_token_ends_a_row_early(model, make_engine) -> None:
    engine = make_engine()
    expected = reference_greedy(model, [4, 5, 6], 8)
    stop = expected[2]
    result = await asyncio.wait_for(
        engine.generate(
            [4, 5, 6], SamplingParams(max_tokens=8, temperature=0.0, stop_token_ids=frozenset({stop}))
        ),
        30,
    )
    cut = expected.index(stop) + 1
    assert result.token_ids == expected[:cut] and result.finish_reason == "stop"


async def test_seeded_sampling_is_reproducible_alone_and_in_a_batch(make_engine) -> None:
    engine = make_engine(max_batch_size=8)
    params = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, seed=1234)
    alone = await asyncio.wait_for(engine.generate([1, 2, 3], params), 30)
    others = [engine.generate([8, 9], SamplingParams(max_tokens=5, temperature=1.0)) for _ in range(3)]
    batched, *_ = await asyncio.wait_for(asyncio.gather(engine.generate([1, 2, 3], params), *others), 30)
    assert batched.token_ids == alone.token_ids
    seeds = [
        (
            await asyncio.wait_for(
                engine.generate([1, 2, 3], SamplingParams(max_tokens=12, temperature=1.5, seed=s)), 30
            )
        ).token_ids
        for s in (1, 2, 3)
    ]
    assert len({tuple(s) for s in seeds}) > 1  # different seeds explore different answers


async def test_full_queue_is_refused_at_once(make_engine) -> None:
    engine = make_engine(max_batch_size=1, max_queue=1)
    tasks = [asyncio.ensure_future(engine.generate([1, 2], greedy(200))) for _ in range(3)]
    done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    refused = [r for r in done if isinstance(r, EngineOverloadedError)]
    assert len(refused) >= 1 and "queue is full" in str(refused[0])
    assert engine.stats["rejected"] == len(refused)


async def test_timeout_frees_the_row(make_engine) -> None:
    engine = make_engine(max_batch_size=2)
    with pytest.raises(TimeoutError):
        await engine.generate(
            [1, 2, 3], SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True), timeout_s=0.05
        )
    for _ in range(200):  # the worker drops the abandoned row at its next step
        if engine.active_rows == 0 and engine.queue_length == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.active_rows == 0 and engine.queue_length == 0
    result = await asyncio.wait_for(engine.generate([1, 2, 3], greedy(2)), 30)
    assert len(result.token_ids) == 2


async def test_close_fails_waiting_requests_and_refuses_new_ones(make_engine) -> None:
    engine = make_engine(max_batch_size=1)
    running = asyncio.ensure_future(engine.generate([1], SamplingParams(max_tokens=400, temperature=0.0)))
    await asyncio.sleep(0.05)
    await asyncio.to_thread(engine.close, 5.0)
    with pytest.raises(EngineClosedError):
        await asyncio.wait_for(running, 10)
    with pytest.raises(EngineClosedError):
        await engine.generate([1], greedy(1))


async def test_a_failing_step_fails_its_batch_and_the_engine_keeps_answering() -> None:
    broken = tiny_model()
    broken.layers[1].down = broken.layers[1].down[:, :3]  # wrong shape: every forward pass raises
    engine = GenerationEngine(broken, max_context_tokens=64, max_batch_tokens=256)
    try:
        for attempt in (1, 2):
            with pytest.raises(EngineFailedError, match="generation failed"):
                await asyncio.wait_for(engine.generate([1, 2], greedy(2)), 30)
            assert engine.stats["failed_batches"] == attempt and engine.active_rows == 0
    finally:
        engine.close(timeout_s=5.0)


async def test_context_limit_is_checked_before_queueing(make_engine) -> None:
    engine = make_engine()
    with pytest.raises(ValueError, match="exceeds the context"):
        await engine.generate([1] * 500, greedy(20))
    with pytest.raises(ValueError, match="no tokens"):
        await engine.generate([], greedy(1))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        await engine.generate([1, CONFIG.vocab_size], greedy(1))


def test_batch_budget_must_fit_one_full_context(model) -> None:
    with pytest.raises(ValueError, match="max_batch_tokens"):
        GenerationEngine(model, max_context_tokens=2048, max_batch_tokens=1024)
