"""Prometheus metrics of one process (``prometheus-client``, one :data:`REGISTRY` per process).

Families (all prefixed ``gymfleet_``):

* ``http_requests_total{server,method,route,status}``, ``http_request_duration_seconds{server,method,route}``,
  ``http_requests_in_flight{server}``: every request a server or the head answers (route = the route *template*;
  anything unrouted, including requests refused before routing, is ``<unmatched>``, so labels stay bounded);
* ``upstream_request_duration_seconds{target,outcome}``, ``upstream_retries_total{target}``: every call made through
  :func:`gymfleet.transport.send`, by target server name (``upstream`` for calls outside the fleet);
* ``rollouts_started_total``, ``rollouts_finished_total``, ``rollouts_failed_total{...,failure_class}`` with labels
  ``agent`` and ``source`` (``agent``: counted by an agent server on ``/run``; ``collector``: by a collector);
* ``registry_instances{status}``, ``registry_heartbeat_age_seconds{name,instance_id}``: the head's registry.

The request middleware is pure ASGI and caches its label children: a few microseconds per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from gymfleet.head.app import Head

__all__ = [
    "REGISTRY",
    "MetricsMiddleware",
    "count_retry",
    "instrument_dispatch",
    "metrics_endpoint",
    "observe_pool_wait",
    "observe_upstream",
    "render_latest",
    "track_head",
]

REGISTRY = CollectorRegistry(auto_describe=False)
UNMATCHED = "<unmatched>"
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

HTTP_REQUESTS = Counter(
    "gymfleet_http_requests", "Requests answered, by route template and status",
    ["server", "method", "route", "status"], registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "gymfleet_http_request_duration_seconds", "Time to answer a request (until the response is sent)",
    ["server", "method", "route"], buckets=_BUCKETS, registry=REGISTRY,
)
HTTP_IN_FLIGHT = Gauge("gymfleet_http_requests_in_flight", "Requests being answered now", ["server"],
                       registry=REGISTRY)
UPSTREAM_LATENCY = Histogram(
    "gymfleet_upstream_request_duration_seconds",
    "Duration of calls to other servers, all attempts included, by target and outcome (2xx..5xx, error)",
    ["target", "outcome"], buckets=_BUCKETS, registry=REGISTRY,
)
UPSTREAM_POOL_WAIT = Histogram(
    "gymfleet_upstream_pool_wait_seconds",
    "Time a call waited for a free connection of the client pool (only calls that had to wait), by target",
    ["target"], buckets=_BUCKETS, registry=REGISTRY,
)
UPSTREAM_RETRIES = Counter("gymfleet_upstream_retries", "Retries of calls to other servers", ["target"],
                           registry=REGISTRY)
ROLLOUTS_STARTED = Counter("gymfleet_rollouts_started", "Rollouts started", ["agent", "source"], registry=REGISTRY)
ROLLOUTS_FINISHED = Counter("gymfleet_rollouts_finished", "Rollouts that ended with an answer", ["agent", "source"],
                            registry=REGISTRY)
ROLLOUTS_FAILED = Counter("gymfleet_rollouts_failed", "Rollouts that failed, by failure class",
                          ["agent", "source", "failure_class"], registry=REGISTRY)


def render_latest() -> tuple[bytes, str]:
    """The text exposition of this process's registry and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


async def metrics_endpoint(request: Any) -> Any:
    """Starlette endpoint for ``GET /metrics``."""
    from starlette.responses import Response

    body, content_type = render_latest()
    return Response(body, media_type=content_type)


# ------------------------------------------------------------------------------------------- upstream calls
_upstream_children: dict[tuple[str, str], Any] = {}
_retry_children: dict[str, Any] = {}


def _outcome(status: int | None) -> str:
    return f"{status // 100}xx" if status else "error"


def observe_upstream(target: str | None, seconds: float, status: int | None) -> None:
    """Record one finished call (all its attempts) to ``target``; ``status`` None means it raised."""
    key = (target or "upstream", _outcome(status))
    child = _upstream_children.get(key)
    if child is None:
        child = _upstream_children[key] = UPSTREAM_LATENCY.labels(*key)
    child.observe(seconds)


_pool_wait_children: dict[str, Any] = {}


def observe_pool_wait(target: str | None, seconds: float) -> None:
    """Record how long one call queued for a pooled connection (pool wait looks like backend latency otherwise)."""
    name = target or "upstream"
    child = _pool_wait_children.get(name)
    if child is None:
        child = _pool_wait_children[name] = UPSTREAM_POOL_WAIT.labels(name)
    child.observe(seconds)


def count_retry(target: str | None) -> None:
    name = target or "upstream"
    child = _retry_children.get(name)
    if child is None:
        child = _retry_children[name] = UPSTREAM_RETRIES.labels(name)
    child.inc()


# ------------------------------------------------------------------------------------------- requests
def _failure_class_of(status: int) -> str:
    if status == 401:
        return "unauthorized"
    if status in (400, 413, 422, 431):
        return "invalid_request"
    if status == 504:
        return "timeout"
    if status == 502:
        return "upstream_error"
    if status >= 500:
        return "internal"
    return "client_error"


class MetricsMiddleware:
    """Pure ASGI middleware counting requests, latency and in-flight requests of one server.

    Args:
        app: the wrapped app.
        server: the ``server`` label (the instance name, or ``head_server``).
        rollout_paths: POST paths that each run one rollout (an agent's ``/run``): also counted as rollouts.
    """

    def __init__(self, app: ASGIApp, *, server: str, rollout_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.server = server or "unnamed"
        self.rollout_paths = frozenset(rollout_paths)
        self._in_flight = HTTP_IN_FLIGHT.labels(self.server)
        self._counts: dict[tuple[str, str, int], Any] = {}
        self._latency: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        rollout = scope["method"] == "POST" and scope["path"] in self.rollout_paths
        if rollout:
            ROLLOUTS_STARTED.labels(self.server, "agent").inc()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self._in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self._in_flight.dec()
            self._record(scope, status, time.perf_counter() - start)
            if rollout:
                if status < 400:
                    ROLLOUTS_FINISHED.labels(self.server, "agent").inc()
                else:
                    ROLLOUTS_FAILED.labels(self.server, "agent", _failure_class_of(status)).inc()

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or UNMATCHED
        method = scope["method"]
        key = (method, template, status)
        counter = self._counts.get(key)
        if counter is None:
            counter = self._counts[key] = HTTP_REQUESTS.labels(self.server, method, template, str(status))
        counter.inc()
        latency = self._latency.get(key[:2])
        if latency is None:
            latency = self._latency[key[:2]] = HTTP_LATENCY.labels(self.server, method, template)
        latency.observe(seconds)


# ------------------------------------------------------------------------------------------- collector
def instrument_dispatch(
    dispatch: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    """Wrap a collector's dispatch so each attempt counts as started, then finished or failed (by class)."""

    async def counted(row: dict[str, Any]) -> dict[str, Any]:
        ref = row.get("agent_ref")
        agent = str((ref.get("name") if isinstance(ref, dict) else None) or "unknown")
        ROLLOUTS_STARTED.labels(agent, "collector").inc()
        try:
            result = await dispatch(row)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            from gymfleet.rollouts.failures import classify_exception

            failure_class = getattr(exc, "failure_class", None) or classify_exception(exc, server=agent).failure_class
            ROLLOUTS_FAILED.labels(agent, "collector", str(failure_class)).inc()
            raise
        ROLLOUTS_FINISHED.labels(agent, "collector").inc()
        return result

    return counted


# ------------------------------------------------------------------------------------------- head registry
class _HeadCollector(Collector):
    """Registry size by status and heartbeat age per instance, read at scrape time from the current head."""

    def __init__(self) -> None:
        self.head: Head | None = None

    def collect(self) -> Iterator[Metric]:
        head = self.head
        if head is None:
            return
        registry = head.registry
        entries = registry.instances()
        sizes = GaugeMetricFamily("gymfleet_registry_instances", "Registered instances by status",
                                  labels=["status"])
        by_status = {"healthy": 0, "unhealthy": 0}
        for entry in entries:
            by_status[entry.status] = by_status.get(entry.status, 0) + 1
        for status, count in sorted(by_status.items()):
            sizes.add_metric([status], count)
        yield sizes
        ages = GaugeMetricFamily("gymfleet_registry_heartbeat_age_seconds",
                                 "Seconds since each instance's last heartbeat", labels=["name", "instance_id"])
        for entry in entries:
            ages.add_metric([entry.info.name, entry.instance_id], registry.heartbeat_age(entry))
        yield ages


_head_collector = _HeadCollector()
REGISTRY.register(_head_collector)


def track_head(head: Head | None) -> None:
    """Export ``head``'s registry from now on (one head per process; the latest one wins)."""
    _head_collector.head = head
