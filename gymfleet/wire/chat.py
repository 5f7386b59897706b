"""OpenAI Chat Completions wire models.

Both are lenient (``extra="allow"``): engines such as vLLM accept and return many non-standard fields
(``chat_template_kwargs``, ``prompt_token_ids``, ``return_tokens_as_token_ids``) that must pass through.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChatCompletion", "ChatCompletionCreateParams"]


class ChatCompletionCreateParams(BaseModel):
    """``POST /v1/chat/completions`` body. Only ``messages`` is required; extra fields are kept."""

    model_config = ConfigDict(extra="allow")

    messages: list[dict[str, Any]]
    model: str | None = None


class ChatCompletion(BaseModel):
    """A chat completion answer. Lenient: every field has a default and extra fields are kept."""

    model_config = ConfigDict(extra="allow")

    id: str = ""
    object: str = "chat.completion"
    created: int | float = 0
    model: str = ""
    choices: list[dict[str, Any]] = Field(default_factory=list)
    usage: dict[str, Any] | None = None
