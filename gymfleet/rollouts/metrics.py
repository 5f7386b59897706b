"""Aggregate metrics over verify responses (successful rollouts only).

``aggregate_metrics(rows)`` returns ``{"group_level_metrics": [...], "agent_metrics": {...},
"key_metrics": {...}}``, the body of a ``/aggregate_metrics`` answer. Statistics are named
``"<stat>/<field>"`` with stat in mean, max, min, median, std (sample std; 0 for one value), over
every numeric top-level field (booleans count as 0/1) and the numeric fields of
``response.usage`` (``input_tokens``, ``output_tokens``, ...). ``key_metrics`` are the ``mean/*``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["STATS", "aggregate_metrics", "describe", "strip_for_metrics"]

STATS = ("mean", "max", "min", "median", "std")
_INDEX_FIELDS = frozenset({"_ng_task_index", "_ng_rollout_index", "_ng_attempt_index"})


def strip_for_metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    """Drop ``responses_create_params`` and all of ``response`` but its usage."""
    out = {k: v for k, v in row.items() if k not in ("responses_create_params", "response")}
    response = row.get("response")
    if isinstance(response, Mapping) and isinstance(response.get("usage"), Mapping):
        out["response"] = {"usage": dict(response["usage"])}
    return out


def _numeric_fields(row: Mapping[str, Any]) -> dict[str, float]:
    values: dict[str, float] = {}
    response = row.get("response")
    usage = response.get("usage") if isinstance(response, Mapping) else None
    sources: list[Mapping[str, Any]] = [usage] if isinstance(usage, Mapping) else []
    sources.append(row)  # the row's own fields win over usage fields of the same name
    for source in sources:
        for key, value in source.items():
            if key in _INDEX_FIELDS:
                continue
            if isinstance(value, bool):
                values[key] = float(value)
            elif isinstance(value, (int, float)) and math.isfinite(value):
                values[key] = float(value)
    return values


def describe(samples: Mapping[str, list[float]]) -> dict[str, float]:
    """``{"<stat>/<field>": value}`` for each field's samples."""
    out: dict[str, float] = {}
    for stat in STATS:
        for name, values in sorted(samples.items()):
            if not values:
                continue
            if stat == "mean":
                value = math.fsum(values) / len(values)
            elif stat == "max":
                value = max(values)
            elif stat == "min":
                value = min(values)
            elif stat == "median":
                value = float(statistics.median(values))
            else:
                value = statistics.stdev(values) if len(values) > 1 else 0.0
            out[f"{stat}/{name}"] = value
    return out


def _collect(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}
    for row in rows:
        for name, value in _numeric_fields(row).items():
            samples.setdefault(name, []).append(value)
    return samples


def aggregate_metrics(
    verify_responses: list[dict[str, Any]],
    *,
    expected_num_rollouts: int | Mapping[int, int] | None = None,
) -> dict[str, Any]:
    """Aggregate metrics of one agent's successful rollouts.

    Args:
        verify_responses: Rollout rows (verify responses); unstripped rows are stripped here.
        expected_num_rollouts: Rollouts expected per task (one int, or by task index). When
            given, each group also reports ``expected_num_rollouts``, ``missing_num_rollouts``
            and ``reward_profile_completion_pct``.

    Returns:
        ``{"group_level_metrics": [...], "agent_metrics": {...}, "key_metrics": {...}}``.
    """
    rows = [strip_for_metrics(r) for r in verify_responses]
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        task = row.get("_ng_task_index")
        if isinstance(task, int) and not isinstance(task, bool):
            groups.setdefault(task, []).append(row)

    group_level: list[dict[str, Any]] = []
    for task in sorted(groups):
        members = sorted(groups[task], key=lambda r: r.get("_ng_rollout_index") or 0)
        sample = {k: v for k, v in members[0].items() if k not in _INDEX_FIELDS and k != "response"}
        entry: dict[str, Any] = {
            "_ng_task_index": task,
            "num_rollouts": len(members),
            "sample": sample,
            "rollout_infos": [
                {"_ng_rollout_index": r.get("_ng_rollout_index"), "reward": r.get("reward")} for r in members
            ],
        }
        if expected_num_rollouts is not None:
            expected = (
                expected_num_rollouts
                if isinstance(expected_num_rollouts, int)
                else int(expected_num_rollouts.get(task, len(members)))
            )
            entry["expected_num_rollouts"] = expected
            entry["missing_num_rollouts"] = max(0, expected - len(members))
            entry["reward_profile_completion_pct"] = 100.0 * len(members) / expected if expected else 100.0
        entry.update(describe(_collect(members)))
        group_level.append(entry)

    agent_metrics: dict[str, Any] = {"num_rollouts": len(rows), "num_tasks": len(groups)}
    agent_metrics.update(describe(_collect(rows)))
    key_metrics = {k: v for k, v in agent_metrics.items() if k.startswith("mean/")}
    return {"group_level_metrics": group_level, "agent_metrics": agent_metrics, "key_metrics": key_metrics}
