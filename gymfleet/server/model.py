"""Model servers: OpenAI-compatible ``/v1/responses`` and ``/v1/chat/completions`` in front of an LLM."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from fastapi import FastAPI

from gymfleet.server.base import BaseServerConfig, SimpleServer
from gymfleet.server.routes import add_json_route, json_response
from gymfleet.wire import ChatCompletion, ChatCompletionCreateParams, Response, ResponseCreateParams

__all__ = ["BaseResponsesAPIModelConfig", "SimpleResponsesAPIModel"]


class BaseResponsesAPIModelConfig(BaseServerConfig):
    pass


class SimpleResponsesAPIModel(SimpleServer):
    """Subclass and implement :meth:`responses` and :meth:`chat_completions`."""

    config: BaseResponsesAPIModelConfig
    server_type: ClassVar[str] = "responses_api_models"

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        add_json_route(app, "/v1/responses", self.responses)
        add_json_route(app, "/v1/chat/completions", self.chat_completions)

        @app.get("/v1/models")
        async def models() -> Any:
            return json_response(
                {"object": "list", "data": [{"id": self.model_id(), "object": "model", "created": int(time.time()),
                                             "owned_by": "gymfleet"}]}
            )

        return app

    @contextlib.asynccontextmanager
    async def upstream_slot(self) -> AsyncIterator[None]:
        """Hold one of ``max_concurrent_requests`` slots (config; unset or 0: unbounded) around an upstream call."""
        semaphore = getattr(self, "_upstream_semaphore", None)
        if semaphore is None:
            limit = getattr(self.config, "max_concurrent_requests", None)
            if not limit:
                yield
                return
            semaphore = self._upstream_semaphore = asyncio.Semaphore(int(limit))
        async with semaphore:
            yield

    def model_id(self) -> str:
        """The model name reported by ``/v1/models``."""
        for key in ("model", "openai_model"):
            value = getattr(self.config, key, None)
            if value:
                return str(value)
        return self.config.name

    async def responses(self, body: ResponseCreateParams) -> Response | dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement responses()")

    async def chat_completions(self, body: ChatCompletionCreateParams) -> ChatCompletion | dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement chat_completions()")
