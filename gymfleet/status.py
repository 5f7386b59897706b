"""Fleet status: ask the head who is registered, then ask each server whether it answers (and how fast)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gymfleet import transport
from gymfleet.errors import ClientError, HeadUnreachableError

__all__ = ["fetch_status", "format_status"]


async def fetch_status(
    head_url: str, *, timeout_s: float = 5.0, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """``/server_instances`` of the head, each entry with ``healthy`` and ``latency_ms`` from a live ``GET /``."""
    try:
        resp = await transport.send("GET", f"{head_url}/server_instances", headers=headers,
                                    timeout=transport.Timeouts(timeout_s, timeout_s), retry=transport.NO_RETRY,
                                    server_name="head_server")
        resp.raise_for_status()
    except ClientError as exc:
        raise HeadUnreachableError(
            f"Could not connect to head server at {head_url}: {exc}. Is the head server running? "
            "Start it with `ng_run` / `gymfleet run`, or pass its address (++head_server.host=... / --head).",
            server_name="head_server", url=head_url,
        ) from exc
    instances: list[dict[str, Any]] = resp.json()

    async def probe(entry: dict[str, Any]) -> None:
        start = time.perf_counter()
        try:
            r = await transport.send("GET", f"{entry['url']}/", headers=headers, timeout=transport.Timeouts(2.0, 2.0),
                                     retry=transport.NO_RETRY, server_name=entry.get("process_name"))
            entry["healthy"] = r.status < 500
        except ClientError:
            entry["healthy"] = False
        entry["latency_ms"] = round((time.perf_counter() - start) * 1000, 2)

    await asyncio.gather(*(probe(e) for e in instances))
    return instances


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 86400}d {s % 86400 // 3600}h {s % 3600 // 60}m {s % 60}s"


def format_status(instances: list[dict[str, Any]]) -> Any:
    """A rich Table of the instances (render with ``rich.console.Console().print``)."""
    from rich.table import Table

    healthy = sum(1 for e in instances if e.get("healthy"))
    table = Table(title=f"{len(instances)} servers found ({healthy} healthy, {len(instances) - healthy} unhealthy)")
    for col in ("", "name", "type / impl", "url", "node", "pid", "status", "uptime", "latency"):
        table.add_column(col)
    for e in instances:
        ok = e.get("healthy")
        table.add_row(
            "[green]✓[/]" if ok else "[red]✗[/]",
            str(e.get("process_name")),
            f"{e.get('server_type')}/{e.get('name')}",
            str(e.get("url")),
            str(e.get("node") or "-"),
            str(e.get("pid") or "-"),
            str(e.get("status") or "-"),
            _uptime(e.get("uptime_seconds")),
            f"{e.get('latency_ms', '-')} ms",
        )
    return table
