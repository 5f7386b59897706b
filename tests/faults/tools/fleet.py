"""Fleets, datasets and collections for the fault scenarios (real subprocess fleets, real collectors).

``start_fleet`` is :func:`tests.fleet_helpers.run_fleet_process` with the fault suite's servers on the search path;
``collect`` runs a real :class:`~gymfleet.rollouts.RolloutCollector` against a fleet's head (in this process, on a
fresh event loop) and returns its summary plus the rows it wrote; ``account`` counts lost and duplicated rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from gymfleet import transport
from gymfleet.client import ServerClient
from gymfleet.errors import RolloutError
from gymfleet.rollouts import (
    CollectionConfig,
    CollectionSummary,
    Dispatch,
    OutputPaths,
    RolloutCollector,
    make_dispatch,
)
from tests.fleet_helpers import (
    AGENT,
    EXAMPLE_CONFIG,
    REPO,
    SCRIPTED_CONFIG,
    TEST_SERVERS_ROOT,
    RunningFleet,
    run_fleet_process,
)

__all__ = [
    "AGENT",
    "EXAMPLE_CONFIG",
    "FAULT_AGENT",
    "FAULT_CONFIG",
    "FAULT_ENV",
    "FAULT_SERVERS_ROOT",
    "MODEL",
    "REPO",
    "SCRIPTED_CONFIG",
    "Accounting",
    "account",
    "collect",
    "fleet_env",
    "percentile",
    "read_jsonl",
    "start_fleet",
    "weather_rows",
    "write_rows",
]

FAULT_SERVERS_ROOT = Path(__file__).resolve().parents[1] / "servers"
FAULT_CONFIG = "tests/faults/servers/configs/faulty_env.yaml"
FAULT_ENV = "faulty_env"
FAULT_AGENT = "faulty_agent"
MODEL = "policy_model.responses_api_models.scripted_model"
WEATHER_TOOL = {
    "type": "function", "name": "get_weather", "description": "", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": ""}},
                   "required": ["city"], "additionalProperties": False},
}


def fleet_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    roots = os.pathsep.join([str(FAULT_SERVERS_ROOT), str(TEST_SERVERS_ROOT)])
    return {"GYMFLEET_EXTRA_ROOTS": roots, **(extra or {})}


@contextlib.contextmanager
def start_fleet(
    tmp: Path, args: Sequence[str], *, env: dict[str, str] | None = None, timeout_s: float = 90.0,
    wait_ready: bool = True,
) -> Iterator[RunningFleet]:
    """``gymfleet run <args>`` (head on an OS-chosen port unless ``args`` says otherwise); stopped on exit."""
    argv = list(args)
    if not any(a.startswith("++head_server.port=") for a in argv):
        argv.append("++head_server.port=0")
    with run_fleet_process(tmp, argv, env=fleet_env(env), timeout_s=timeout_s, wait_ready=wait_ready) as fleet:
        yield fleet


def weather_rows(n: int, *, fault: str | None = None, every: int = 0, agent: str | None = None) -> list[dict]:
    """``n`` tool-calling rows; with ``fault`` and ``every``, every ``every``-th row carries ``fault``."""
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"responses_create_params": {
            "input": [{"role": "user", "content": f"what's it like in city{i}?"}], "tools": [WEATHER_TOOL]}}
        if fault and (every == 0 or i % every == 0):
            row["fault"] = fault
        if agent:
            row["agent_ref"] = {"name": agent}
        rows.append(row)
    return rows


def write_rows(path: Path, rows: Sequence[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            out.append(orjson.loads(line))
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


Accounting = dict[str, Any]  # expected, succeeded, failed, lost, duplicated, classes, rewards


def account(output: Path, expected: int) -> Accounting:
    """Count what a collection wrote: every expected key must appear exactly once, as a success or a failure."""
    paths = OutputPaths.from_output(output)
    ok = read_jsonl(paths.output)
    failed = read_jsonl(paths.failures)
    keys = Counter((r["_ng_task_index"], r["_ng_rollout_index"]) for r in [*ok, *failed])
    return dict(
        expected=expected,
        succeeded=len(ok),
        failed=len(failed),
        lost=expected - len(keys),
        duplicated=sum(n - 1 for n in keys.values() if n > 1),
        classes=dict(Counter(str(r.get("_ng_failure_class")) for r in failed)),
        rewards=dict(Counter(r.get("reward") for r in ok)),
    )


def collect(
    head_url: str,
    rows: Sequence[dict] | Path,
    output: Path,
    *,
    agent: str,
    dispatch_wrapper: Callable[[Dispatch], Dispatch] | None = None,
    **settings: Any,
) -> tuple[CollectionSummary | None, RolloutError | None, float]:
    """Run one collection against the fleet at ``head_url``; returns (summary, error it ended with, wall seconds).

    ``dispatch_wrapper`` wraps the real dispatch (to time each failure as the collector sees it)."""
    source = rows if isinstance(rows, Path) else write_rows(output.parent / f"{output.stem}-input.jsonl", rows)
    host, port = head_url.removeprefix("http://").rsplit(":", 1)

    async def run() -> tuple[CollectionSummary | None, RolloutError | None]:
        client = ServerClient.load_from_global_config({"host": host, "port": int(port)})
        config = CollectionConfig.from_mapping({
            "agent_name": agent, "input_jsonl_fpath": str(source), "output_jsonl_fpath": str(output),
            "quiet": True, "disable_aggregation": True, **settings,
        })
        dispatch = make_dispatch(client)
        collector = RolloutCollector(config, dispatch_wrapper(dispatch) if dispatch_wrapper else dispatch)
        try:
            return await collector.run(handle_signals=False), None
        except RolloutError as exc:  # aborted past the failure-rate threshold, resume refused, ...
            return collector.summary, exc
        finally:
            await transport.close_sessions()

    start = time.monotonic()
    summary, error = asyncio.run(run())
    return summary, error, time.monotonic() - start

