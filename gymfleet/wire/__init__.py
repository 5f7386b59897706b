"""Wire types and Responses <-> Chat Completions conversion, NeMo Gym compatible."""

from __future__ import annotations

from gymfleet.wire.chat import ChatCompletion, ChatCompletionCreateParams
from gymfleet.wire.convert import (
    TOKEN_ID_FIELDS,
    ConversionError,
    chat_completion_to_response,
    responses_to_chat_params,
    split_think,
)
from gymfleet.wire.responses import Response, ResponseCreateParams
from gymfleet.wire.rollout import (
    AggregateMetrics,
    AggregateMetricsRequest,
    BaseRunRequest,
    BaseSeedSessionRequest,
    BaseSeedSessionResponse,
    BaseVerifyRequest,
    BaseVerifyResponse,
)

__all__ = [
    # Responses API
    "Response",
    "ResponseCreateParams",
    # Chat Completions
    "ChatCompletion",
    "ChatCompletionCreateParams",
    # rollouts, sessions, verification, metrics
    "AggregateMetrics",
    "AggregateMetricsRequest",
    "BaseRunRequest",
    "BaseSeedSessionRequest",
    "BaseSeedSessionResponse",
    "BaseVerifyRequest",
    "BaseVerifyResponse",
    # conversion
    "TOKEN_ID_FIELDS",
    "ConversionError",
    "chat_completion_to_response",
    "responses_to_chat_params",
    "split_think",
]
