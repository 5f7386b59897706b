"""Responses API <-> Chat Completions conversion, as pure functions on plain dicts.

Engines such as vLLM speak Chat Completions; agents and trainers speak the Responses API. These functions
translate one request and one answer per model turn. They never build pydantic models of whole
conversations: a long rollout history is converted on every turn, so the work stays a single pass over
dicts.

Token-id capture: an assistant turn may carry ``prompt_token_ids``, ``generation_token_ids`` and
``generation_log_probs``. On the Responses side these ride on the last output item of the turn; when such
items come back as input they are copied onto the assistant chat message so an RL trainer can replay the
exact tokens.
"""

from __future__ import annotations

from gymfleet.wire._convert_base import TOKEN_ID_FIELDS, ConversionError, new_id
from gymfleet.wire._to_chat import responses_to_chat_params
from gymfleet.wire._to_response import chat_completion_to_response, split_think

__all__ = [
    "TOKEN_ID_FIELDS",
    "ConversionError",
    "chat_completion_to_response",
    "new_id",
    "responses_to_chat_params",
    "split_think",
]
