"""vllm_model: Responses API in front of one or more vLLM (Chat Completions) engines.

``/v1/responses`` converts the request to Chat Completions (:mod:`gymfleet.wire.convert`), calls an engine's
``/chat/completions`` and converts the answer back. ``/v1/chat/completions`` is served directly with the
same preprocessing. A rollout sticks to one engine (sha256 of the session id modulo the number of URLs, so
its prefix cache is reused); an engine that cannot be reached is skipped for ``down_cooldown_s`` and the
request goes to the next one.

With ``return_token_id_information`` every answer carries the exact tokens of the turn (``prompt_token_ids``,
``generation_token_ids``, ``generation_log_probs``) for RL training.
"""

import hashlib
import json
import logging
import time
import uuid
from typing import Any

from pydantic import Field

from gymfleet import transport
from gymfleet.errors import ClientError, UpstreamConnectError, UpstreamDisconnectedError
from gymfleet.server import BaseResponsesAPIModelConfig, SimpleResponsesAPIModel, current_session_id
from gymfleet.server.routes import json_response
from gymfleet.wire import (
    ChatCompletion,
    ChatCompletionCreateParams,
    ConversionError,
    Response,
    ResponseCreateParams,
    chat_completion_to_response,
    responses_to_chat_params,
    split_think,
)

logger = logging.getLogger("gymfleet.models.vllm_model")

# Phrases of vLLM's 400 answers when prompt + max_tokens do not fit the context window.
_CONTEXT_ERROR_MARKERS = ("context length", "maximum model length", "max_tokens", "max_completion_tokens")
_TOKEN_ID_PREFIX = "token_id:"


class UpstreamAnswerError(ClientError):
    """The engine answered 2xx with a body that is not a chat completion."""


class VLLMModelConfig(BaseResponsesAPIModelConfig):
    base_url: str | list[str]
    api_key: str = "EMPTY"
    model: str
    return_token_id_information: bool = False
    # Also ask for vLLM's native ``return_token_ids``: prompt ids without a /tokenize call (vLLM >= 0.10.2).
    request_prompt_and_generation_token_ids: bool = False
    uses_reasoning_parser: bool = False
    replace_developer_role_with_system: bool = False
    chat_template_kwargs: dict[str, Any] | None = None
    sampling_overrides: dict[str, Any] = Field(default_factory=dict)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    default_headers: dict[str, str] = Field(default_factory=dict)
    max_concurrent_requests: int | None = Field(default=None, ge=1)
    request_timeout_s: float = Field(default=900.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)  # per attempt: a blackholed engine fails fast
    down_cooldown_s: float = Field(default=30.0, ge=0)


class VLLMModel(SimpleResponsesAPIModel):
    config: VLLMModelConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        urls = self.config.base_url if isinstance(self.config.base_url, list) else [self.config.base_url]
        if not urls:
            raise ValueError(
                f"vllm_model '{self.config.name}': base_url is an empty list; give at least one URL."
            )
        self._urls = [u.rstrip("/") for u in urls]
        self._down_until = [0.0] * len(self._urls)
        self._headers = {**self.config.default_headers, "Authorization": f"Bearer {self.config.api_key}"}
        # With several engines, give up on a dead one quickly and fail over instead of retrying it.
        self._retry = (
            transport.RetryPolicy(max_attempts=2) if len(self._urls) > 1 else transport.RetryPolicy()
        )

    # ------------------------------------------------------------------------------------ routes
    def model_id(self) -> str:
        return self.config.model

    async def responses(self, body: ResponseCreateParams) -> Response | dict[str, Any]:
        params = body.model_dump()
        try:
            chat = responses_to_chat_params(
                params, replace_developer_role_with_system=self.config.replace_developer_role_with_system
            )
        except ConversionError as exc:
            return _invalid_request(exc)
        completion = await self._complete(chat)
        if not isinstance(completion, dict):
            return completion  # an error response
        try:
            return chat_completion_to_response(
                completion, params, uses_reasoning_parser=self.config.uses_reasoning_parser
            )
        except ConversionError as exc:
            raise UpstreamAnswerError(f"Engine answer cannot be converted to a Response: {exc}") from exc

    async def chat_completions(self, body: ChatCompletionCreateParams) -> ChatCompletion | dict[str, Any]:
        completion = await self._complete(body.model_dump(exclude_unset=True))
        return completion

    # ------------------------------------------------------------------------------------ pipeline
    async def _complete(self, chat: dict[str, Any]) -> Any:
        try:
            request = self._prepare(chat)
        except ConversionError as exc:
            return _invalid_request(exc)
        index = self._sticky_index()
        async with self.upstream_slot():
            resp, index = await self._send("/chat/completions", request, index)
            if resp.status == 400 and _is_context_error(resp.text()):
                logger.info("engine at %s: prompt does not fit the context window; answering empty", resp.url)
                return _empty_length_completion(request["model"])
            resp.raise_for_status()
            try:
                completion = resp.json()
                message = completion["choices"][0]["message"]
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise UpstreamAnswerError(
                    f"Engine at {resp.url} answered HTTP {resp.status} without choices[0].message: "
                    f"{resp.text()[:300]!r}",
                    url=resp.url,
                ) from exc
            if self.config.uses_reasoning_parser:
                _rewrap_reasoning(message)
            if self.config.return_token_id_information:
                await self._attach_token_ids(completion, request, index)
        return completion

    def _prepare(self, chat: dict[str, Any]) -> dict[str, Any]:
        """The engine request: model forced, config merged in, think tags of the history moved out."""
        request = dict(chat)
        metadata = request.pop("metadata", None) or {}
        template_kwargs = {
            **(self.config.chat_template_kwargs or {}),
            **(request.get("chat_template_kwargs") or {}),
            **_json_field(metadata, "chat_template_kwargs"),
        }
        request = {**self.config.extra_body, **request, **_json_field(metadata, "extra_body")}
        if template_kwargs:
            request["chat_template_kwargs"] = template_kwargs
        request.update(self.config.sampling_overrides)
        request["model"] = self.config.model
        request["messages"] = [self._prepare_message(m) for m in request.get("messages", [])]
        if self.config.return_token_id_information:
            if (request.get("n") or 1) != 1:
                raise ConversionError(
                    "n > 1 is not supported with return_token_id_information: token ids are captured for one "
                    "choice. Send n=1 requests instead.",
                    where="n",
                )
            request.update(logprobs=True, top_logprobs=0, return_tokens_as_token_ids=True)
            if self.config.request_prompt_and_generation_token_ids:
                request["return_token_ids"] = True
        return request

    def _prepare_message(self, message: dict[str, Any]) -> dict[str, Any]:
        role = message.get("role")
        if role == "developer" and self.config.replace_developer_role_with_system:
            return {**message, "role": "system"}
        if (
            role == "assistant"
            and isinstance(message.get("content"), str)
            and "reasoning_content" not in message
        ):
            reasoning, text = split_think(message["content"])
            if reasoning is not None:
                return {**message, "content": text, "reasoning_content": reasoning}
        return message

    async def _attach_token_ids(
        self, completion: dict[str, Any], request: dict[str, Any], index: int
    ) -> None:
        """Put prompt ids, generation ids and log probs on the message, from the best source present."""
        choice = completion["choices"][0]
        message = choice["message"]
        if message.get("generation_token_ids") is None:
            entries = (choice.get("logprobs") or {}).get("content") or []
            tokens = choice.get("token_ids")
            if tokens is None:
                tokens = _token_ids_from_logprobs(entries, completion.get("model"))
            message["generation_token_ids"] = tokens
            message["generation_log_probs"] = [float(e.get("logprob", 0.0)) for e in entries]
        if message.get("prompt_token_ids") is None:
            prompt_ids = choice.get("prompt_token_ids", completion.get("prompt_token_ids"))
            if prompt_ids is None:
                prompt_ids = await self._tokenize(request, index)
            message["prompt_token_ids"] = prompt_ids

    async def _tokenize(self, request: dict[str, Any], index: int) -> list[int]:
        body = {
            key: request[key]
            for key in ("model", "messages", "tools", "chat_template_kwargs")
            if request.get(key) is not None
        }
        body["add_generation_prompt"] = True
        resp, _ = await self._send("/tokenize", body, index, strip_v1=True)
        resp.raise_for_status()
        return list(resp.json()["tokens"])

    # ------------------------------------------------------------------------------------ engines
    def _sticky_index(self) -> int:
        if len(self._urls) == 1:
            return 0
        digest = hashlib.sha256(current_session_id().encode()).digest()
        return int.from_bytes(digest[:8], "big") % len(self._urls)

    async def _send(
        self, path: str, body: dict[str, Any], index: int, *, strip_v1: bool = False
    ) -> tuple[transport.Response, int]:
        """Send to engine ``index``, failing over to the next live engines when one cannot be reached."""
        n = len(self._urls)
        now = time.monotonic()
        order = [(index + k) % n for k in range(n)]
        live = [i for i in order if self._down_until[i] <= now]
        candidates = live + [i for i in order if i not in live]  # all down: try them anyway
        last_error: ClientError | None = None
        for i in candidates:
            base = self._urls[i]
            if strip_v1 and base.endswith("/v1"):
                base = base[: -len("/v1")]
            try:
                resp = await transport.send(
                    "POST",
                    f"{base}{path}",
                    json=body,
                    headers=self._headers,
                    timeout=transport.Timeouts(connect=self.config.connect_timeout_s,
                                               total=self.config.request_timeout_s),
                    retry=self._retry,
                )
            except (UpstreamConnectError, UpstreamDisconnectedError) as exc:
                self._down_until[i] = time.monotonic() + self.config.down_cooldown_s
                if n > 1:
                    logger.warning("engine %s unreachable (%s); failing over", self._urls[i], exc)
                last_error = exc
                continue
            self._down_until[i] = 0.0
            return resp, i
        assert last_error is not None
        raise last_error


# ---------------------------------------------------------------------------------------- helpers
def _invalid_request(exc: ConversionError) -> Any:
    return json_response(
        {"error": {"message": str(exc), "type": "invalid_request_error", "param": exc.where, "code": None}},
        400,
    )


def _json_field(metadata: dict[str, Any], key: str) -> dict[str, Any]:
    """``metadata`` values are strings; these two carry JSON objects (NeMo Gym convention)."""
    raw = metadata.get(key)
    if not raw:
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise ConversionError(
            f"metadata.{key} must be a JSON object string, got {raw!r}: {exc}", where=f"metadata.{key}"
        ) from exc
    if not isinstance(value, dict):
        raise ConversionError(f"metadata.{key} must be a JSON object, got {raw!r}", where=f"metadata.{key}")
    return value


def _is_context_error(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in _CONTEXT_ERROR_MARKERS)


def _empty_length_completion(model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "finish_reason": "length",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def _token_ids_from_logprobs(entries: list[dict[str, Any]], model: Any) -> list[int]:
    tokens = [str(e.get("token", "")) for e in entries]
    if not all(t.startswith(_TOKEN_ID_PREFIX) for t in tokens):
        raise UpstreamAnswerError(
            f"The engine serving {model!r} returned logprob tokens without the 'token_id:' form, so "
            "token ids cannot be captured. return_token_id_information needs a vLLM engine "
            "(return_tokens_as_token_ids); turn it off for other engines."
        )
    return [int(t[len(_TOKEN_ID_PREFIX) :]) for t in tokens]


def _rewrap_reasoning(message: dict[str, Any]) -> None:
    """Engine-parsed reasoning goes back into the content as ``<think>...</think>`` (NeMo Gym's shape)."""
    reasoning = message.pop("reasoning_content", None) or message.pop("reasoning", None)
    message.pop("reasoning", None)
    if reasoning:
        message["content"] = f"<think>{reasoning}</think>{message.get('content') or ''}"


if __name__ == "__main__":
    VLLMModel.run_webserver()
