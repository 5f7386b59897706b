"""The head's web dashboard: a fleet table, live throughput and error rates, Ray status. No CDN, no framework.

* ``GET /`` with ``Accept: text/html`` (a browser) and ``GET /dashboard``: the page. It holds no data, so ``GET /``
  serves it without the fleet token; the page's script fetches the data with the token it finds in the URL fragment
  (``/#token=...``, never sent to the server or its logs) or asks for it.
* ``GET /dashboard/data``: JSON for the page (token required when one is set): every registered instance (node,
  status, uptime, last heartbeat) with its request, error and rollout rates, fleet totals, and Ray's status.

Rates come from the servers' own ``/metrics``: the head scrapes each healthy instance (bounded: a deadline per scrape,
at most :data:`MAX_SCRAPED` instances), keeps the previous sample and divides the counter deltas by the time between.
Assets live in ``gymfleet/head/static/`` and are inlined into the page under a nonce-based Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from gymfleet import transport
from gymfleet.errors import ClientError

if TYPE_CHECKING:
    from gymfleet.head.app import Head

__all__ = ["FleetSampler", "dashboard_response", "install_dashboard", "parse_counters", "wants_html"]

MAX_SCRAPED = 64
_STATIC = Path(__file__).resolve().parent / "static"
SCRAPE_TIMEOUT = transport.Timeouts(connect=1.0, total=2.0)
_SAMPLE = re.compile(r"^(gymfleet_(?:http_requests|rollouts_finished|rollouts_failed)_total)\{([^}]*)\} (\S+)$",
                     re.MULTILINE)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def wants_html(request: Request) -> bool:
    """True for a browser navigation (``Accept`` prefers ``text/html``); API clients keep getting JSON."""
    accept = request.headers.get("accept", "")
    return "text/html" in accept


def _asset(name: str) -> str:
    return (_STATIC / name).read_text(encoding="utf-8")


_page_cache: str | None = None


def dashboard_response() -> Response:
    """The dashboard page with its CSS and JS inlined under a fresh CSP nonce."""
    global _page_cache
    if _page_cache is None:
        _page_cache = (
            _asset("dashboard.html")
            .replace("/*__CSS__*/", _asset("dashboard.css"))
            .replace("/*__JS__*/", _asset("dashboard.js"))
        )
    nonce = secrets.token_urlsafe(16)
    page = _page_cache.replace("__NONCE__", nonce)
    csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
           "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return Response(page, media_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": csp, "Cache-Control": "no-store",
                             "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})


@dataclass
class _Counters:
    at: float
    requests: float
    errors: float
    rollouts_ok: float
    rollouts_failed: float


def parse_counters(text: str, server: str) -> _Counters:
    """Sum the counters of ``server`` in a Prometheus text exposition (scrapes of ``/metrics`` not counted)."""
    requests = errors = ok = failed = 0.0
    for name, raw_labels, raw_value in _SAMPLE.findall(text):
        labels = dict(_LABEL.findall(raw_labels))
        try:
            value = float(raw_value)
        except ValueError:
            continue
        if name == "gymfleet_http_requests_total":
            if labels.get("server") != server or labels.get("route") == "/metrics":
                continue
            requests += value
            if labels.get("status", "").startswith("5"):
                errors += value
        elif labels.get("source") == "agent" and labels.get("agent") == server:
            if name == "gymfleet_rollouts_finished_total":
                ok += value
            else:
                failed += value
    return _Counters(time.monotonic(), requests, errors, ok, failed)


def _rate(now: float, before: float, seconds: float) -> float:
    return round(max(0.0, now - before) / seconds, 3) if seconds > 0 else 0.0


class FleetSampler:
    """Scrapes the fleet's ``/metrics`` on demand (at most once per ``min_interval_s``) and derives rates."""

    def __init__(self, head: Head, *, min_interval_s: float = 1.0) -> None:
        self.head = head
        self.min_interval_s = min_interval_s
        self._previous: dict[str, _Counters] = {}
        self._rates: dict[str, dict[str, float]] = {}
        self._sampled_at = 0.0
        self._lock = asyncio.Lock()
        self._ray: tuple[float, dict[str, Any] | None] = (0.0, None)

    async def _scrape(self, instance_id: str, name: str, url: str) -> None:
        try:
            resp = await transport.send("GET", f"{url}/metrics", timeout=SCRAPE_TIMEOUT, retry=transport.NO_RETRY,
                                        server_name=name)
        except ClientError:
            self._rates.pop(instance_id, None)
            return
        if resp.status != 200:
            self._rates.pop(instance_id, None)
            return
        now = parse_counters(resp.text(), name)
        before = self._previous.get(instance_id)
        self._previous[instance_id] = now
        if before is None:
            return
        seconds = now.at - before.at
        self._rates[instance_id] = {
            "requests_per_s": _rate(now.requests, before.requests, seconds),
            "errors_per_s": _rate(now.errors, before.errors, seconds),
            "rollouts_per_s": _rate(now.rollouts_ok, before.rollouts_ok, seconds),
            "rollouts_failed_per_s": _rate(now.rollouts_failed, before.rollouts_failed, seconds),
        }

    async def sample(self) -> None:
        async with self._lock:
            if time.monotonic() - self._sampled_at < self.min_interval_s:
                return
            entries = [e for e in self.head.registry.instances() if e.status == "healthy"][:MAX_SCRAPED]
            await asyncio.gather(*(self._scrape(e.instance_id, e.info.name, e.info.url) for e in entries))
            live = {e.instance_id for e in self.head.registry.instances()}
            for stale in set(self._previous) - live:
                self._previous.pop(stale, None)
                self._rates.pop(stale, None)
            self._sampled_at = time.monotonic()

    async def ray_status(self) -> dict[str, Any] | None:
        address = self.head.static_config.get("ray_head_node_address")
        if not address:
            return None
        checked_at, cached = self._ray
        if cached is not None and time.monotonic() - checked_at < 5.0:
            return cached
        text = str(address).split("://", 1)[-1]
        host, _, port = text.rpartition(":")
        status: dict[str, Any] = {"address": str(address), "reachable": False}
        if host and port.isdigit():
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), 1.0)
                writer.close()
                status["reachable"] = True
            except (OSError, asyncio.TimeoutError) as exc:
                status["error"] = f"{type(exc).__name__}: {exc}"
        else:
            status["error"] = "ray_head_node_address is not HOST:PORT"
        self._ray = (time.monotonic(), status)
        return status

    async def snapshot(self) -> dict[str, Any]:
        """The page's data: instances with rates, fleet totals, Ray status."""
        await self.sample()
        rows = self.head.registry.display()
        totals = {"instances": len(rows), "healthy": 0, "requests_per_s": 0.0, "errors_per_s": 0.0,
                  "rollouts_per_s": 0.0, "rollouts_failed_per_s": 0.0}
        for row in rows:
            rates = self._rates.get(row["instance_id"])
            row["rates"] = rates
            totals["healthy"] += row["status"] == "healthy"
            for key, value in (rates or {}).items():
                totals[key] = round(totals[key] + value, 3)
        finished = totals["requests_per_s"]
        totals["error_rate"] = round(totals["errors_per_s"] / finished, 4) if finished else 0.0
        return {"generated_at": time.time(), "instances": rows, "totals": totals, "ray": await self.ray_status()}


def install_dashboard(app: FastAPI, head: Head) -> FleetSampler:
    """Add ``GET /dashboard`` and ``GET /dashboard/data`` to the head's app (``GET /`` negotiates in app.py)."""
    sampler = FleetSampler(head)

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> Response:
        return dashboard_response()

    @app.get("/dashboard/data")
    async def dashboard_data() -> Response:
        return Response(orjson.dumps(await sampler.snapshot()), media_type="application/json")

    return sampler
