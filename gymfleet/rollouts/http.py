"""The adapter from the collector to real servers through ``gymfleet.client.ServerClient``.

``make_dispatch(client)`` posts each row to its agent's ``/run`` and turns every way that can go
wrong into a typed :class:`~gymfleet.rollouts.failures.RolloutFailure`: transport errors
(connect, timeout, disconnect, unknown server) are retryable; error answers are classified from
the gymfleet error body (the upstream that failed decides model/environment/agent error, 429
is ``rate_limited``, timeouts are ``timeout``); a 200 that is not JSON is ``invalid_response``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import orjson

from gymfleet import transport
from gymfleet.client import ServerClient
from gymfleet.errors import ClientError
from gymfleet.rollouts.aggregate import Aggregate
from gymfleet.rollouts.engine import Dispatch
from gymfleet.rollouts.failures import INVALID_RESPONSE, RolloutFailure, classify_exception, classify_status
from gymfleet.rollouts.metrics import aggregate_metrics

__all__ = ["PostClient", "make_aggregate", "make_dispatch"]

logger = logging.getLogger("gymfleet.rollouts")


class PostClient(Protocol):
    """The part of ``gymfleet.client.ServerClient`` the collector uses."""

    async def post(self, server_name: str, url_path: str, *, json: Any = None, **kwargs: Any) -> Any: ...


async def _read_json(resp: Any) -> Any:
    content = getattr(resp, "content", None)
    if isinstance(content, (bytes, bytearray, memoryview)):
        return orjson.loads(bytes(content))
    return await resp.json()


def _retry_after(resp: Any) -> float | None:
    headers = getattr(resp, "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None  # an HTTP-date: the capped exponential backoff applies instead


def _excerpt(resp: Any) -> str:
    content = getattr(resp, "content", None)
    if isinstance(content, (bytes, bytearray)):
        return bytes(content[:300]).decode(errors="replace")
    return ""


def make_dispatch(client: PostClient, **post_kwargs: Any) -> Dispatch:
    """``async (row) -> verify response`` that posts ``row`` to ``row["agent_ref"]["name"]``'s ``/run``.

    ``post_kwargs`` go to every ``client.post`` (e.g. ``timeout=`` / ``retry=`` of ``ServerClient``):
    give ``/run`` a transport deadline no shorter than ``rollout_timeout_s``, which governs rollouts.
    """

    if isinstance(client, ServerClient):
        # The collector owns deadlines and retries of /run (rollout_timeout_s, max_attempts, Retry-After): the
        # transport must neither cut a long rollout at its default 900 s nor multiply the attempts.
        post_kwargs.setdefault("timeout", transport.Timeouts(connect=10.0, total=None))
        post_kwargs.setdefault("retry", transport.NO_RETRY)

    async def dispatch(row: dict[str, Any]) -> dict[str, Any]:
        name = str(row["agent_ref"]["name"])
        try:
            resp = await client.post(server_name=name, url_path="/run", json=row, **post_kwargs)
        except RolloutFailure:
            raise
        except (ClientError, OSError, asyncio.TimeoutError) as exc:
            raise classify_exception(exc, server=name) from exc
        status = int(resp.status)
        if status >= 400:
            try:
                body = await _read_json(resp)
            except Exception:
                body = None
            error = body.get("error") if isinstance(body, dict) else None
            raise classify_status(
                status,
                error if isinstance(error, dict) else None,
                server=name,
                retry_after_s=_retry_after(resp),
                detail=_excerpt(resp),
            )
        try:
            return await _read_json(resp)  # type: ignore[no-any-return]
        except Exception as exc:
            raise RolloutFailure(
                f"agent '{name}' answered HTTP {status} with a body that is not JSON ({exc}): "
                f"{_excerpt(resp)!r}",
                failure_class=INVALID_RESPONSE,
                retryable=False,
                server=name,
                status=status,
            ) from exc

    return dispatch


def make_aggregate(client: PostClient) -> Aggregate:
    """``async (agent, rows) -> metrics`` via the agent's ``/aggregate_metrics``, else computed locally."""

    async def aggregate(agent: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            resp = await client.post(
                server_name=agent, url_path="/aggregate_metrics", json={"verify_responses": rows}
            )
            if int(resp.status) == 200:
                body = await _read_json(resp)
                if isinstance(body, dict) and isinstance(body.get("agent_metrics"), dict):
                    return body
                logger.warning("agent '%s' answered /aggregate_metrics without agent_metrics", agent)
            else:
                logger.info("agent '%s' has no usable /aggregate_metrics (HTTP %s)", agent, resp.status)
        except Exception as exc:
            logger.warning("agent '%s' /aggregate_metrics failed: %s", agent, exc)
        logger.info("computing aggregate metrics for agent '%s' locally", agent)
        return await asyncio.to_thread(aggregate_metrics, rows)

    return aggregate
