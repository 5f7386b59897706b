"""Resources servers: the environment. Tools are routes; ``/seed_session`` starts a rollout, ``/verify`` scores it.

``verify_timeout_s`` in a server's config block bounds every ``/verify``: past it the call is cancelled and answered
as a typed ``504 timeout`` (the collector records the row as ``timeout``), so one stuck verifier cannot hold a rollout
until the collector's much longer deadline. CPU-bound verifiers should also run in
:func:`gymfleet.server.isolate.run_isolated`, which cancellation alone cannot stop.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, ClassVar

from fastapi import FastAPI

from gymfleet.server.base import BaseServerConfig, SimpleServer
from gymfleet.server.isolate import DeadlineExceededError
from gymfleet.server.routes import add_json_route
from gymfleet.wire import (
    AggregateMetrics,
    AggregateMetricsRequest,
    BaseSeedSessionRequest,
    BaseSeedSessionResponse,
    BaseVerifyRequest,
    BaseVerifyResponse,
)

__all__ = ["BaseResourcesServerConfig", "SimpleResourcesServer"]


class BaseResourcesServerConfig(BaseServerConfig):
    domain: str | None = None
    verify_timeout_s: float | None = None  # deadline of one /verify; None: only the caller's deadline bounds it


class SimpleResourcesServer(SimpleServer):
    """Subclass and implement :meth:`verify`; add tool routes in :meth:`setup_webserver`."""

    config: BaseResourcesServerConfig
    server_type: ClassVar[str] = "resources_servers"
    sessions_in_memory: ClassVar[bool] = True  # seed_session state: refuse sessions of a dead instance (409)

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        add_json_route(app, "/seed_session", self.seed_session)
        add_json_route(app, "/verify", self._bounded(self.verify, self.config.verify_timeout_s))
        add_json_route(app, "/aggregate_metrics", self.aggregate_metrics)
        return app

    def _bounded(self, handler: Any, timeout_s: float | None) -> Any:
        if not timeout_s:
            return handler

        @functools.wraps(handler)  # keeps the body annotation the route layer reads
        async def bounded(*args: Any, **kwargs: Any) -> Any:
            try:
                return await asyncio.wait_for(handler(*args, **kwargs), timeout_s)
            except asyncio.TimeoutError:
                raise DeadlineExceededError(
                    f"{type(self).__name__} '{self.config.name}': {handler.__name__} did not finish within "
                    f"verify_timeout_s={timeout_s:g}s and was cancelled. Raise verify_timeout_s if the work is "
                    "legitimately slow; run CPU-bound work in gymfleet.server.isolate.run_isolated.",
                    timeout_s=timeout_s,
                ) from None

        return bounded

    async def seed_session(self, body: BaseSeedSessionRequest) -> BaseSeedSessionResponse:
        """Prepare per-rollout state (keyed by ``current_session_id()``). Default: nothing to prepare."""
        return BaseSeedSessionResponse()

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        raise NotImplementedError(f"{type(self).__name__} must implement verify()")

    async def aggregate_metrics(self, body: AggregateMetricsRequest) -> AggregateMetrics:
        # Imported here: `gymfleet.rollouts` is the collector, ~0.2 s of imports no server start should pay.
        from gymfleet.rollouts.metrics import aggregate_metrics

        return AggregateMetrics(**aggregate_metrics(body.verify_responses))
