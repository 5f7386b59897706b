"""OpenAI Responses API wire models (create params and the Response object).

Create params are strict (``extra="forbid"``) so a misspelt field is a 422 naming the field path. The
Response object is lenient (``extra="allow"``, defaults everywhere except ``output``) so any reasonable
upstream answer validates. Input and output items stay plain dicts: validating every item of a long
conversation on each call costs CPU on the rollout hot path and buys nothing we use.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Response", "ResponseCreateParams"]


class ResponseCreateParams(BaseModel):
    """Non-streaming ``POST /v1/responses`` body. Unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[dict[str, Any]]
    model: str | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    metadata: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    truncation: str | None = None
    user: str | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    include: list[str] | None = None
    prompt: dict[str, Any] | None = None
    service_tier: str | None = None
    top_logprobs: int | None = None
    background: bool | None = None
    seed: int | None = None
    stream: Literal[False] | None = None


class Response(BaseModel):
    """An OpenAI ``Response`` object. Lenient: extra fields are kept, only ``output`` is required."""

    model_config = ConfigDict(extra="allow")

    id: str = ""
    object: str = "response"
    created_at: float = Field(default_factory=lambda: float(int(time.time())))
    model: str = ""
    output: list[dict[str, Any]]
    status: str | None = "completed"
    incomplete_details: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    instructions: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    metadata: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    truncation: str | None = None
    user: str | None = None
