"""Shared helpers for the rollout collection tests: files, configs, and a scriptable dispatch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from gymfleet.rollouts import CollectionConfig

Behaviour = Callable[[dict[str, Any], int], Awaitable[dict[str, Any]]]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for row in rows:
            f.write(orjson.dumps(row) + b"\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def keys(rows: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(r["_ng_task_index"], r["_ng_rollout_index"]) for r in rows]


def make_rows(n: int) -> list[dict[str, Any]]:
    return [{"responses_create_params": {"input": f"question {i}"}, "expected": i} for i in range(n)]


def make_config(tmp_path: Path, **overrides: Any) -> CollectionConfig:
    values: dict[str, Any] = {
        "agent_name": "agent",
        "input_jsonl_fpath": str(tmp_path / "input.jsonl"),
        "output_jsonl_fpath": str(tmp_path / "out" / "rollouts.jsonl"),
        "quiet": True,
        "retry_backoff_base_s": 0.005,
        "retry_backoff_max_s": 0.02,
        "stop_grace_s": 1.0,
        "fsync_interval_ms": -1,
        "progress_interval_s": 0.1,
        "progress_log_interval_s": 3600.0,
    }
    values.update(overrides)
    return CollectionConfig(**values)


def verify_response(row: dict[str, Any], reward: float = 1.0) -> dict[str, Any]:
    """What a simple agent's /run answers: the run body plus response and reward."""
    return {
        **row,
        "response": {"id": "resp_1", "output": [], "usage": {"input_tokens": 10, "output_tokens": 4}},
        "reward": reward,
    }


class ScriptedAgent:
    """A plain async dispatch function whose answer depends on (row, attempt); records what it saw."""

    def __init__(self, behaviour: Behaviour | None = None, delay_s: float = 0.0) -> None:
        self.behaviour = behaviour
        self.delay_s = delay_s
        self.calls: list[tuple[tuple[int, int], int]] = []
        self.attempts: dict[tuple[int, int], int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.started = time.monotonic()

    async def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        key = (row["_ng_task_index"], row["_ng_rollout_index"])
        attempt = self.attempts.get(key, 0)
        self.attempts[key] = attempt + 1
        self.calls.append((key, row.get("_ng_attempt_index", 0)))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.behaviour is None:
                return verify_response(row)
            return await self.behaviour(row, attempt)
        finally:
            self.in_flight -= 1
