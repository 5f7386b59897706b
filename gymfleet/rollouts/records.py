"""The lines a rollout leaves behind: a stamped success line or a failure record.

A success line is the agent's answer with the collector's stamps (``_ng_task_index``,
``_ng_rollout_index``, ``agent_ref``, and ``_ng_attempt_index`` after a retry), which always win
over whatever the agent echoed. A failure record is the input row (plus the agent's answer when
there was one) with ``_ng_failure_class``, ``_ng_failure_message``, ``_ng_failure_terminal``,
``_ng_attempt_index``, ``_ng_failure_attempts`` (dispatches in this run), ``_ng_failure_started_at``,
``_ng_failure_at`` and, when known, ``_ng_failure_server`` / ``_ng_failure_status``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson

from gymfleet.rollouts.failures import INVALID_RESPONSE, RolloutFailure, check_reward

__all__ = ["check_answer", "failure_record", "now_iso", "success_line"]

_STAMPS = ("_ng_task_index", "_ng_rollout_index", "agent_ref")


def now_iso() -> str:
    """UTC time as ISO 8601 with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def check_answer(result: Any, agent: str) -> RolloutFailure | None:
    """``None`` for a verified rollout; the failure for an agent-reported failure or no reward."""
    if isinstance(result, dict) and isinstance(result.get("_ng_failure_class"), str):
        terminal = bool(result.get("_ng_failure_terminal"))
        message = result.get("_ng_failure_message") or f"agent '{agent}' reported a failed rollout"
        return RolloutFailure(
            f"{message} ({result['_ng_failure_class']})",
            failure_class=result["_ng_failure_class"],
            retryable=not terminal,
            terminal=terminal,
            server=agent,
            body=result,
        )
    return check_reward(result, server=agent)


def success_line(row: dict[str, Any], result: dict[str, Any], attempt: int) -> bytes | RolloutFailure:
    """The serialized success line, or an ``invalid_response`` failure if it is not JSON."""
    out = dict(result)
    for key in _STAMPS:
        out[key] = row[key]
    if attempt > 0:
        out["_ng_attempt_index"] = attempt
    else:
        out.pop("_ng_attempt_index", None)
    try:
        return orjson.dumps(out) + b"\n"
    except TypeError as exc:
        agent = row["agent_ref"]["name"]
        return RolloutFailure(
            f"the answer of agent '{agent}' cannot be stored as JSON ({exc})",
            failure_class=INVALID_RESPONSE,
            retryable=False,
            server=agent,
        )


def failure_record(
    row: dict[str, Any], failure: RolloutFailure, *, attempt: int, tries: int, started_at: str
) -> dict[str, Any]:
    """The failure line of a rollout whose final attempt (index ``attempt``) failed."""
    record = dict(row)
    if failure.body is not None:
        try:
            orjson.dumps(failure.body)
            record.update(failure.body)
        except TypeError:
            pass  # keep the input row; the message says what was wrong with the answer
    for key in _STAMPS:
        if key in row:
            record[key] = row[key]
    record.update(
        {
            "_ng_failure_class": failure.failure_class,
            "_ng_failure_message": str(failure),
            "_ng_failure_terminal": failure.terminal,
            "_ng_attempt_index": attempt,
            "_ng_failure_attempts": tries,
            "_ng_failure_started_at": started_at,
            "_ng_failure_at": now_iso(),
        }
    )
    if failure.server:
        record["_ng_failure_server"] = failure.server
    if failure.status is not None:
        record["_ng_failure_status"] = failure.status
    return record
