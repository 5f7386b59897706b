"""Write ``<stem>_aggregate_metrics.json`` from the success output of a run (or of merged shards).

Only successes count: failure lines live in another file and never enter reward statistics.
Each key counts once (first line wins), so a duplicated line cannot skew a mean.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from gymfleet.rollouts.metrics import aggregate_metrics, strip_for_metrics
from gymfleet.rollouts.paths import atomic_write_bytes
from gymfleet.rollouts.resume import iter_jsonl, row_key

__all__ = ["Aggregate", "dump_entries", "load_successes", "metrics_entry", "write_aggregate_metrics"]

logger = logging.getLogger("gymfleet.rollouts")

Aggregate = Callable[[str, list[dict[str, Any]]], Awaitable[dict[str, Any]]]


def load_successes(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Stripped success rows of ``path`` by agent name, first occurrence of each key only."""
    seen: set[tuple[int, int]] = set()
    by_agent: dict[str, list[dict[str, Any]]] = {}
    for _, row in iter_jsonl(path):
        key = row_key(row) if row is not None else None
        if row is None or key is None or key in seen:
            continue
        seen.add(key)
        ref = row.get("agent_ref")
        agent = str(ref.get("name")) if isinstance(ref, dict) and ref.get("name") else "unknown"
        by_agent.setdefault(agent, []).append(strip_for_metrics(row))
    return by_agent


def metrics_entry(agent: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """One element of the aggregate metrics file."""
    return {
        "agent_ref": {"name": agent},
        "agent_metrics": metrics.get("agent_metrics", {}),
        "key_metrics": metrics.get("key_metrics", {}),
        "group_level_metrics": metrics.get("group_level_metrics", []),
    }


def dump_entries(entries: list[dict[str, Any]]) -> bytes:
    """Serialize the aggregate metrics file."""
    return orjson.dumps(entries, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)


async def write_aggregate_metrics(
    output: Path,
    target: Path,
    *,
    aggregate: Aggregate | None = None,
    repeats_for: Callable[[str], int | None] = lambda _agent: None,
    timeout_s: float = 600.0,
) -> list[dict[str, Any]]:
    """Aggregate the successes in ``output`` per agent and write the list to ``target``.

    ``aggregate`` (e.g. the agent's ``/aggregate_metrics``) is tried first; when it fails or
    answers something that is not metrics, the local :func:`aggregate_metrics` is used.
    """
    by_agent = await asyncio.to_thread(load_successes, output)
    entries = []
    for agent in sorted(by_agent):
        rows = by_agent[agent]
        metrics: Any = None
        if aggregate is not None:
            try:
                metrics = await asyncio.wait_for(aggregate(agent, rows), timeout=timeout_s)
            except Exception as exc:
                logger.warning(
                    "aggregate metrics of agent '%s' failed (%s); computing them locally", agent, exc
                )
            if not (isinstance(metrics, dict) and isinstance(metrics.get("agent_metrics"), dict)):
                metrics = None
        if metrics is None:
            expected = repeats_for(agent)
            metrics = await asyncio.to_thread(aggregate_metrics, rows, expected_num_rollouts=expected)
        entries.append(metrics_entry(agent, metrics))
    await asyncio.to_thread(atomic_write_bytes, target, dump_entries(entries))
    return entries
