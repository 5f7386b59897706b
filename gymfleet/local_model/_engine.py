"""Continuous batching: many concurrent requests share each decode step of one worker thread.

Requests wait in a bounded queue. Between two decode steps the worker admits waiting requests (prefill, then
the sequence joins the batch's KV cache as a new row) and drops finished or abandoned ones, so a short request
never waits for a long one to finish. Admission is bounded by rows (``max_batch_size``) and by the token
budget each row reserves (prompt + max new tokens, ``max_batch_tokens``): memory stays bounded whatever the
load. A full queue is refused at once with :class:`EngineOverloadedError` (the server answers 429).

Sampling is per row: greedy at temperature 0, else temperature + top-p with the request's own seeded
generator, so a seeded request reproduces its tokens. Log probabilities are those of the model's raw
distribution (temperature 1, before top-p), the same convention as vLLM's default.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from gymfleet.errors import ServerError
from gymfleet.local_model._llama import KVCache, LlamaModel

__all__ = [
    "EngineClosedError",
    "EngineFailedError",
    "EngineOverloadedError",
    "GenerationEngine",
    "GenerationResult",
    "SamplingParams",
]

logger = logging.getLogger("gymfleet.local_model")


class EngineOverloadedError(ServerError):
    """The waiting queue is full; retry later (the server answers 429 with Retry-After)."""


class EngineClosedError(ServerError):
    """The engine was closed (the server is stopping) before the request finished."""


class EngineFailedError(ServerError):
    """Generation failed inside the engine (a bug, an allocation failure); its whole batch failed too."""


@dataclass(frozen=True)
class SamplingParams:
    """How to generate one answer. ``temperature`` 0 means greedy."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: frozenset[int] = frozenset()
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0
    ignore_eos: bool = False


@dataclass
class GenerationResult:
    token_ids: list[int]
    logprobs: list[float]
    top_logprobs: list[list[tuple[int, float]]]
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    queued_s: float = 0.0


@dataclass
class _Request:
    prompt: list[int]
    params: SamplingParams
    future: asyncio.Future[GenerationResult]
    loop: asyncio.AbstractEventLoop
    enqueued: float
    generator: torch.Generator | None = None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[list[tuple[int, float]]] = field(default_factory=list)
    started: float = 0.0
    cancelled: bool = False

    @property
    def reserved(self) -> int:
        return len(self.prompt) + self.params.max_tokens


class GenerationEngine:
    """Owns the model, the KV cache and one worker thread. Submit with :meth:`generate` from any event loop.

    Args:
        model: The loaded model.
        max_batch_size: Rows decoded together (the KV cache is allocated for this many rows).
        max_queue: Requests allowed to wait for a row; more are refused with :class:`EngineOverloadedError`.
        max_batch_tokens: Sum of (prompt + max new tokens) over the rows of a batch: bounds KV-cache memory.
        max_context_tokens: Longest prompt + generation of one request.
        prefill_tokens_per_step: Prompt tokens admitted between two decode steps (at least one request), so
            a burst of long prompts does not stall the sequences already decoding.
        decode_text: Token ids -> text, used to check ``stop`` strings.
    """

    def __init__(
        self,
        model: LlamaModel,
        *,
        max_batch_size: int = 16,
        max_queue: int = 256,
        max_batch_tokens: int = 16384,
        max_context_tokens: int = 2048,
        prefill_tokens_per_step: int = 1024,
        decode_text: Callable[[Sequence[int]], str] | None = None,
    ) -> None:
        if max_batch_tokens < max_context_tokens:
            raise ValueError(
                f"max_batch_tokens ({max_batch_tokens}) must be at least max_context_tokens "
                f"({max_context_tokens}), or a request of full context length could never be admitted."
            )
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.max_batch_tokens = max_batch_tokens
        self.max_context_tokens = max_context_tokens
        self.prefill_tokens_per_step = prefill_tokens_per_step
        self._decode_text = decode_text
        self._pending: collections.deque[_Request] = collections.deque()
        self._active: list[_Request] = []
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._seed_source = itertools.count(int(time.time_ns() % 1_000_003))
        self.cache: KVCache = model.new_cache(max_rows=max_batch_size, max_columns=max_context_tokens + 1)
        self.stats = {
            "requests": 0,
            "generated_tokens": 0,
            "decode_steps": 0,
            "rejected": 0,
            "max_rows": 0,
            "failed_batches": 0,
        }

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gymfleet-local-model", daemon=True)
            self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the worker; requests still waiting or running fail with :class:`EngineClosedError`."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("local model worker did not stop within %.0fs", timeout_s)
        with self._cond:
            leftovers = list(self._pending) + self._active
            self._pending.clear()
            self._active = []
        for request in leftovers:
            if not request.cancelled:
                _deliver(request, EngineClosedError("local model engine closed: the server is stopping"))

    @property
    def queue_length(self) -> int:
        return len(self._pending)

    @property
    def active_rows(self) -> int:
        return len(self._active)

    # ------------------------------------------------------------------------------------ submit
    async def generate(
        self, prompt: list[int], params: SamplingParams, *, timeout_s: float | None = None
    ) -> GenerationResult:
        """Generate for ``prompt``; cancelling the caller (or ``timeout_s``) frees its row at the next step.

        Raises:
            EngineOverloadedError: The queue is full.
            EngineClosedError: The engine is closed or closes meanwhile.
            TimeoutError: ``timeout_s`` passed first.
            EngineFailedError: Generation failed in the engine (the server logs the traceback).
            ValueError: The prompt is empty, has unknown token ids or does not fit ``max_context_tokens``.
        """
        if not prompt:
            raise ValueError("the prompt has no tokens")
        vocab = self.model.config.vocab_size
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise ValueError(f"the prompt holds token ids outside the vocabulary [0, {vocab})")
        if len(prompt) + max(params.max_tokens, 1) > self.max_context_tokens:
            raise ValueError(
                f"prompt of {len(prompt)} tokens + max_tokens {params.max_tokens} exceeds the context of "
                f"{self.max_context_tokens} tokens"
            )
        loop = asyncio.get_running_loop()
        request = _Request(
            prompt=list(prompt),
            params=params,
            future=loop.create_future(),
            loop=loop,
            enqueued=time.monotonic(),
        )
        with self._cond:
            if self._closing:
                raise EngineClosedError("local model engine closed: the server is stopping")
            if len(self._pending) >= self.max_queue:
                self.stats["rejected"] += 1
                raise EngineOverloadedError(
                    f"local model queue is full ({self.max_queue} waiting, {len(self._active)} generating); "
                    "retry later or raise max_queue"
                )
            self._pending.append(request)
            self.stats["requests"] += 1
            self._cond.notify()
        self.start()
        try:
            return await asyncio.wait_for(asyncio.shield(request.future), timeout_s)
        except BaseException:
            request.cancelled = True  # timeout or caller cancelled: the worker drops the row
            raise

    # ------------------------------------------------------------------------------------ worker
    def _run(self) -> None:
        # Every tensor of the cache is created and updated in this thread, all under inference mode (a buffer
        # grown inside it cannot be written outside it).
        with torch.inference_mode():
            self._loop()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not self._pending and not self._active:
                    self._cond.wait(timeout=1.0)
                if self._closing:
                    return
                admitted = self._admit()
            try:
                for request in admitted:
                    self._prefill(request)
                self._drop_done()
                if self._active:
                    self._step()
                    self._drop_done()
            except Exception as exc:  # a bug or an allocation failure: fail this batch loudly, keep serving
                logger.exception(
                    "local model step failed; failing the %d running requests", len(self._active)
                )
                failed = self._active + [r for r in admitted if r not in self._active]
                self._active = []
                self.cache.reset()
                self.stats["failed_batches"] += 1
                error = EngineFailedError(f"local model generation failed: {type(exc).__name__}: {exc}")
                for request in failed:
                    if not request.cancelled:
                        _deliver(request, error)

    def _admit(self) -> list[_Request]:
        admitted: list[_Request] = []
        reserved = sum(r.reserved for r in self._active)
        prefill = 0
        while self._pending:
            request = self._pending[0]
            if request.cancelled or request.future.done():
                self._pending.popleft()
                continue
            rows = len(self._active) + len(admitted)
            if rows >= self.max_batch_size or reserved + request.reserved > self.max_batch_tokens:
                break
            if admitted and prefill + len(request.prompt) > self.prefill_tokens_per_step:
                break
            self._pending.popleft()
            admitted.append(request)
            reserved += request.reserved
            prefill += len(request.prompt)
        return admitted

    def _prefill(self, request: _Request) -> None:
        request.started = time.monotonic()
        seed = request.params.seed if request.params.seed is not None else next(self._seed_source)
        if request.params.temperature > 0:
            request.generator = torch.Generator().manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
        logits, keys, values = self.model.prefill(request.prompt)
        self._active.append(request)
        self.cache.add_row(keys, values)
        self._sample([request], logits[None, :])
        self.stats["max_rows"] = max(self.stats["max_rows"], len(self._active))

    def _step(self) -> None:
        tokens = torch.tensor([r.tokens[-1] for r in self._active], dtype=torch.long)
        positions = torch.tensor([len(r.prompt) + len(r.tokens) - 1 for r in self._active], dtype=torch.long)
        logits = self.model.decode(tokens, positions, self.cache)
        self.stats["decode_steps"] += 1
        self._sample(self._active, logits)

    def _sample(self, requests: list[_Request], logits: torch.Tensor) -> None:
        logprobs = torch.log_softmax(logits, dim=-1)
        greedy = logits.argmax(dim=-1).tolist()
        for i, request in enumerate(requests):
            p = request.params
            if p.temperature <= 0 or request.generator is None:
                token = int(greedy[i])
            else:
                probs = torch.softmax(logits[i] / p.temperature, dim=-1)
                if p.top_p < 1.0:
                    sorted_probs, order = probs.sort(descending=True)
                    keep = (sorted_probs.cumsum(0) - sorted_probs) < p.top_p
                    keep[0] = True
                    probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_probs[keep])
                token = int(torch.multinomial(probs, 1, generator=request.generator).item())
            request.tokens.append(token)
            request.logprobs.append(float(logprobs[i, token]))
            if p.top_logprobs:
                values, ids = logprobs[i].topk(p.top_logprobs)
                request.top.append(list(zip(ids.tolist(), values.tolist(), strict=True)))
        self.stats["generated_tokens"] += len(requests)

    def _finish_reason(self, request: _Request) -> str | None:
        p = request.params
        if not p.ignore_eos and request.tokens[-1] in p.stop_token_ids:
            return "stop"
        if p.stop and self._decode_text is not None:
            tail = self._decode_text(request.tokens[-32:])
            if any(s in tail for s in p.stop):
                return "stop"
        if len(request.tokens) >= p.max_tokens:
            return "length"
        return None

    def _drop_done(self) -> None:
        done: list[int] = []
        for row, request in enumerate(self._active):
            if request.cancelled or request.future.done():
                done.append(row)
                continue
            reason = self._finish_reason(request)
            if reason is not None:
                done.append(row)
                _deliver(
                    request,
                    GenerationResult(
                        token_ids=request.tokens,
                        logprobs=request.logprobs,
                        top_logprobs=request.top,
                        finish_reason=reason,
                        prompt_tokens=len(request.prompt),
                        queued_s=request.started - request.enqueued,
                    ),
                )
        if done:
            keep = self.cache.remove_rows(done)
            self._active = [self._active[i] for i in keep]


def _deliver(request: _Request, outcome: GenerationResult | BaseException) -> None:
    def settle() -> None:
        if request.future.done():
            return
        if isinstance(outcome, BaseException):
            request.future.set_exception(outcome)
        else:
            request.future.set_result(outcome)

    try:
        request.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
        pass
