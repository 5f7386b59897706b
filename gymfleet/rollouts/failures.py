"""The failure taxonomy of one rollout and the mapping from exceptions to it.

A rollout that does not produce a verified reward ends as exactly one failure line of one class.
Classes that name infrastructure (``timeout``, ``connection_error``, ``rate_limited``, 5xx
``model_error`` / ``environment_error`` / ``agent_error``) are retried with backoff inside a run;
``invalid_row`` and 4xx answers are *terminal*: resume never retries them either.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from gymfleet.errors import (
    ClientError,
    RolloutError,
    ServerNotFoundError,
    UpstreamConnectError,
    UpstreamDisconnectedError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)

__all__ = [
    "FAILURE_CLASSES",
    "RolloutFailure",
    "classify_exception",
    "classify_status",
    "check_reward",
]

TIMEOUT = "timeout"
MODEL_ERROR = "model_error"
ENVIRONMENT_ERROR = "environment_error"
AGENT_ERROR = "agent_error"
CONNECTION_ERROR = "connection_error"
RATE_LIMITED = "rate_limited"
INVALID_ROW = "invalid_row"
INVALID_RESPONSE = "invalid_response"

FAILURE_CLASSES: tuple[str, ...] = (
    TIMEOUT,
    MODEL_ERROR,
    ENVIRONMENT_ERROR,
    AGENT_ERROR,
    CONNECTION_ERROR,
    RATE_LIMITED,
    INVALID_ROW,
    INVALID_RESPONSE,
)

_MAX_MESSAGE_CHARS = 2000


class RolloutFailure(RolloutError):
    """One attempt of one rollout failed; carries the class the collector records.

    Args:
        message: What went wrong, where, and what to do next.
        failure_class: One of :data:`FAILURE_CLASSES` (an agent may report its own class, e.g.
            ``judge_failed``; it is recorded verbatim).
        retryable: Whether another attempt inside this run may succeed.
        terminal: Never retry this row, not even on resume.
        server: The server that failed, when known.
        status: The HTTP status involved, when there was one.
        retry_after_s: A ``Retry-After`` the upstream asked for.
        body: The answer the agent gave, when it answered (kept on the failure line).
    """

    def __init__(
        self,
        message: str,
        *,
        failure_class: str,
        retryable: bool,
        terminal: bool = False,
        server: str | None = None,
        status: int | None = None,
        retry_after_s: float | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message[:_MAX_MESSAGE_CHARS])
        self.failure_class = failure_class
        self.retryable = retryable and not terminal
        self.terminal = terminal
        self.server = server
        self.status = status
        self.retry_after_s = retry_after_s
        self.body = body


def classify_status(
    status: int,
    error: dict[str, Any] | None,
    *,
    server: str | None,
    retry_after_s: float | None = None,
    detail: str | None = None,
) -> RolloutFailure:
    """Turn an error answer from an agent (status + gymfleet error body) into a failure.

    ``error`` is the ``{"error": {...}}`` object of a gymfleet server, or ``None`` when the body
    was not one (then ``detail``, e.g. the start of the body, goes into the message). The
    upstream type decides the class; 429 and timeouts win over it.
    """
    err = error or {}
    inner_status = err.get("status") if isinstance(err.get("status"), int) else None
    err_type = err.get("type")
    upstream_type = err.get("upstream_server_type")
    failing = err.get("upstream_server") or err.get("server") or server
    detail = str(err.get("message") or detail or "")[:500]
    where = f"agent '{server}'" if server else "the agent"
    suffix = f": {detail}" if detail else ""

    if status == 429 or inner_status == 429:
        cls, retryable = RATE_LIMITED, True
    elif err_type == "upstream_timeout" or status in (408, 504) or inner_status in (408, 504):
        cls, retryable = TIMEOUT, True
    elif upstream_type == "responses_api_models":
        cls = MODEL_ERROR
        retryable = status >= 500 and not _is_client_status(inner_status)
    elif upstream_type == "resources_servers":
        cls = ENVIRONMENT_ERROR
        retryable = status >= 500 and not _is_client_status(inner_status)
    else:
        cls, retryable = AGENT_ERROR, status >= 500
    # A 4xx that is ours to fix (bad request body) is deterministic: retrying it anywhere is waste.
    terminal = 400 <= status < 500 and status not in (408, 429)
    return RolloutFailure(
        f"{where} answered HTTP {status} ({cls}){suffix}",
        failure_class=cls,
        retryable=retryable,
        terminal=terminal,
        server=failing,
        status=status,
        retry_after_s=retry_after_s,
    )


def _is_client_status(status: int | None) -> bool:
    return status is not None and 400 <= status < 500 and status not in (408, 429)


def classify_exception(exc: BaseException, *, server: str | None = None) -> RolloutFailure:
    """Map any exception raised while dispatching one attempt to a :class:`RolloutFailure`."""
    if isinstance(exc, RolloutFailure):
        return exc
    name = getattr(exc, "server_name", None) or server
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, UpstreamStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error") if isinstance(body.get("error"), dict) else None
        return classify_status(exc.status, error, server=name)
    if isinstance(exc, (UpstreamTimeoutError, asyncio.TimeoutError, TimeoutError)):
        return RolloutFailure(text, failure_class=TIMEOUT, retryable=True, server=name)
    if isinstance(exc, ServerNotFoundError):
        # The client already waited for the name to be registered; asking again at once won't help.
        return RolloutFailure(text, failure_class=CONNECTION_ERROR, retryable=False, server=name)
    if isinstance(exc, (UpstreamConnectError, UpstreamDisconnectedError)):
        return RolloutFailure(text, failure_class=CONNECTION_ERROR, retryable=True, server=name)
    if isinstance(exc, (ClientError, ConnectionError, OSError)):
        return RolloutFailure(text, failure_class=CONNECTION_ERROR, retryable=True, server=name)
    # Anything else is a bug in the dispatch path: record it, do not hammer it.
    return RolloutFailure(text, failure_class=AGENT_ERROR, retryable=False, server=name)


def check_reward(result: Any, *, server: str | None) -> RolloutFailure | None:
    """Return a failure when an agent's 200 answer is not a verified rollout, else ``None``."""
    where = f"agent '{server}'" if server else "the agent"
    if not isinstance(result, dict):
        return RolloutFailure(
            f"{where} answered 200 with a {type(result).__name__}, not a JSON object; "
            "a /run answer must be the verify response with a numeric 'reward'",
            failure_class=INVALID_RESPONSE,
            retryable=False,
            server=server,
        )
    reward = result.get("reward")
    if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
        keys = ", ".join(sorted(map(str, result))[:20])
        return RolloutFailure(
            f"{where} answered 200 without a finite numeric 'reward' (reward={reward!r}; keys: {keys}); "
            "check the resources server's /verify",
            failure_class=INVALID_RESPONSE,
            retryable=False,
            server=server,
            body=result,
        )
    return None
