"""openai_model: pass-through model server in front of any OpenAI-compatible endpoint.

No conversion: ``/v1/responses`` goes to the upstream's ``/responses`` and ``/v1/chat/completions`` to its
``/chat/completions``. The body is ``extra_body | request`` (only the fields the caller set) with ``model``
forced to ``openai_model``. Upstream calls have deadlines and bounded retries (429/502/503/504 honour
``Retry-After``); an upstream error status becomes a typed 502 naming the URL and the upstream's message.
"""

import logging
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from gymfleet import transport
from gymfleet.errors import ClientError
from gymfleet.server import BaseResponsesAPIModelConfig, SimpleResponsesAPIModel
from gymfleet.wire import ChatCompletion, ChatCompletionCreateParams, Response, ResponseCreateParams

logger = logging.getLogger("gymfleet.models.openai_model")


class UpstreamAnswerError(ClientError):
    """The upstream answered 2xx with a body that is not the expected OpenAI object."""


class OpenAIModelConfig(BaseResponsesAPIModelConfig):
    openai_base_url: str
    openai_api_key: str
    openai_model: str
    extra_body: dict[str, Any] = Field(default_factory=dict)
    openai_default_headers: dict[str, str] = Field(default_factory=dict)
    max_concurrent_requests: int | None = Field(default=None, ge=1)
    # OpenAI rejects reasoning items it did not produce (no encrypted content); drop them from the input.
    drop_input_reasoning_items: bool = False
    request_timeout_s: float = Field(default=900.0, gt=0)
    # A blackholed upstream (SYNs dropped) costs this per attempt, not the kernel's ~127 s of SYN retries.
    connect_timeout_s: float = Field(default=10.0, gt=0)


class OpenAIModel(SimpleResponsesAPIModel):
    config: OpenAIModelConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._base_url = self.config.openai_base_url.rstrip("/")
        self._headers = {
            **self.config.openai_default_headers,
            "Authorization": f"Bearer {self.config.openai_api_key}",
        }

    def model_id(self) -> str:
        return self.config.openai_model

    async def responses(self, body: ResponseCreateParams) -> Response | dict[str, Any]:
        payload = {**self.config.extra_body, **body.model_dump(exclude_unset=True)}
        payload["model"] = self.config.openai_model
        if self.config.drop_input_reasoning_items and isinstance(payload.get("input"), list):
            payload["input"] = [item for item in payload["input"] if item.get("type") != "reasoning"]
        return await self._post("/responses", payload, Response)

    async def chat_completions(self, body: ChatCompletionCreateParams) -> ChatCompletion | dict[str, Any]:
        payload = {**self.config.extra_body, **body.model_dump(exclude_unset=True)}
        payload["model"] = self.config.openai_model
        return await self._post("/chat/completions", payload, ChatCompletion)

    async def _post(self, path: str, payload: dict[str, Any], expected: type[BaseModel]) -> dict[str, Any]:
        url = f"{self._base_url}{path}"
        async with self.upstream_slot():
            resp = await transport.send(
                "POST", url, json=payload, headers=self._headers,
                timeout=transport.Timeouts(connect=self.config.connect_timeout_s, total=self.config.request_timeout_s),
            )
        resp.raise_for_status()
        try:
            data = resp.json()
            expected.model_validate(data)
        except (ValueError, ValidationError) as exc:
            raise UpstreamAnswerError(
                f"The upstream at {url} answered HTTP {resp.status} with a body that is not a valid "
                f"{expected.__name__}: {resp.text()[:300]!r}. Check that openai_base_url points at an "
                "OpenAI-compatible API (it usually ends in /v1).",
                url=url,
            ) from exc
        return data


if __name__ == "__main__":
    OpenAIModel.run_webserver()
