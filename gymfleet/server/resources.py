"""Resources servers: the environment. Tools are routes; ``/seed_session`` starts a rollout, ``/verify`` scores it."""

from __future__ import annotations

from typing import ClassVar

from fastapi import FastAPI

from gymfleet.rollouts.metrics import aggregate_metrics
from gymfleet.server.base import BaseServerConfig, SimpleServer
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


class SimpleResourcesServer(SimpleServer):
    """Subclass and implement :meth:`verify`; add tool routes in :meth:`setup_webserver`."""

    config: BaseResourcesServerConfig
    server_type: ClassVar[str] = "resources_servers"

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        add_json_route(app, "/seed_session", self.seed_session)
        add_json_route(app, "/verify", self.verify)
        add_json_route(app, "/aggregate_metrics", self.aggregate_metrics)
        return app

    async def seed_session(self, body: BaseSeedSessionRequest) -> BaseSeedSessionResponse:
        """Prepare per-rollout state (keyed by ``current_session_id()``). Default: nothing to prepare."""
        return BaseSeedSessionResponse()

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        raise NotImplementedError(f"{type(self).__name__} must implement verify()")

    async def aggregate_metrics(self, body: AggregateMetricsRequest) -> AggregateMetrics:
        return AggregateMetrics(**aggregate_metrics(body.verify_responses))
