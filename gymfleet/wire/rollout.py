"""Rollout, seed-session, verify and metrics wire models shared by agents and resources servers.

Run/verify bodies keep extra fields (``extra="allow"``): dataset rows carry fields such as
``expected_answer``, ``_ng_task_index`` or ``agent_ref`` that an agent must forward to ``/verify``
untouched.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gymfleet.wire.responses import Response, ResponseCreateParams

__all__ = [
    "AggregateMetrics",
    "AggregateMetricsRequest",
    "BaseRunRequest",
    "BaseSeedSessionRequest",
    "BaseSeedSessionResponse",
    "BaseVerifyRequest",
    "BaseVerifyResponse",
]


class BaseRunRequest(BaseModel):
    """Body of an agent's ``POST /run``: the model request plus any dataset fields."""

    model_config = ConfigDict(extra="allow")

    responses_create_params: ResponseCreateParams


class BaseVerifyRequest(BaseRunRequest):
    """Body of a resources server's ``POST /verify``: the run request plus the model's response."""

    response: Response


class BaseVerifyResponse(BaseVerifyRequest):
    """Answer of ``POST /verify``: the verify request echoed back with a reward."""

    reward: float


class BaseSeedSessionRequest(BaseModel):
    """Body of ``POST /seed_session``. No fields of its own; the run body's fields are kept."""

    model_config = ConfigDict(extra="allow")


class BaseSeedSessionResponse(BaseModel):
    """Answer of ``POST /seed_session``. Empty by default; servers may add fields."""

    model_config = ConfigDict(extra="allow")


class AggregateMetricsRequest(BaseModel):
    """Body of ``POST /aggregate_metrics``: every verify response of a rollout collection."""

    model_config = ConfigDict(extra="allow")

    verify_responses: list[dict[str, Any]]


class AggregateMetrics(BaseModel):
    """Answer of ``POST /aggregate_metrics``."""

    model_config = ConfigDict(extra="allow")

    group_level_metrics: list[dict[str, Any]] = Field(default_factory=list)
    agent_metrics: dict[str, Any] = Field(default_factory=dict)
    key_metrics: dict[str, Any] = Field(default_factory=dict)
