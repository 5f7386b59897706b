"""Collection glue shared by ``gymfleet collect``, ``ng_collect_rollouts`` and ``gymfleet quickstart``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from gymfleet.client import ServerClient
from gymfleet.metrics import instrument_dispatch
from gymfleet.rollouts import CollectionConfig, CollectionSummary, RolloutCollector, make_aggregate, make_dispatch

__all__ = ["collect_with_client", "print_summary", "write_summary_json"]


async def collect_with_client(client: ServerClient, settings: Mapping[str, Any]) -> CollectionSummary:
    """Run one collection through ``client`` with NeMo Gym's keys (agent_name, input_jsonl_fpath, ...)."""
    config = CollectionConfig.from_mapping(settings)
    dispatch = instrument_dispatch(make_dispatch(client))  # rollouts started/finished/failed in gymfleet.metrics
    collector = RolloutCollector(config, dispatch, aggregate=make_aggregate(client))
    port = settings.get("metrics_port")
    if port is None:
        return await collector.run()
    from gymfleet.metrics_server import serve_metrics  # uvicorn is imported only when metrics are served

    async with serve_metrics(str(settings.get("metrics_host") or "127.0.0.1"), int(port)):
        return await collector.run()


def print_summary(summary: CollectionSummary, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="Rollout collection")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("expected", str(summary.expected))
    table.add_row("succeeded", str(summary.succeeded))
    for failure_class, count in sorted(summary.failed_by_class.items()):
        table.add_row(f"failed: {failure_class}", str(count))
    table.add_row("retried", str(summary.retried))
    table.add_row("skipped (already done)", str(summary.skipped_from_cache))
    table.add_row("missing", str(summary.missing))
    table.add_row("wall time", f"{summary.wall_s:.2f} s")
    table.add_row("rollouts / s", f"{summary.rollouts_per_s:.1f}")
    for agent, metrics in (summary.key_metrics or {}).items():
        for key, value in sorted(metrics.items()):
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            table.add_row(f"{agent}: {key}", shown)
    console.print(table)


def write_summary_json(summary: CollectionSummary, path: str | Path) -> None:
    """The accounting as JSON (``to_dict`` plus timings), written atomically: scripts read it, not the table."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2))
    tmp.replace(target)
