"""Agent servers: run one rollout (``/run``) and expose the episode as ``/v1/responses``."""

from __future__ import annotations

from typing import Any, ClassVar

from fastapi import FastAPI

from gymfleet.server.base import BaseServerConfig, SimpleServer
from gymfleet.server.routes import Cookies, add_json_route
from gymfleet.wire import AggregateMetrics, AggregateMetricsRequest, BaseRunRequest, ResponseCreateParams

__all__ = ["BaseResponsesAPIAgentConfig", "SimpleResponsesAPIAgent"]


class BaseResponsesAPIAgentConfig(BaseServerConfig):
    skip_verification: bool = False
    skip_verification_reward: float = 0.0


class SimpleResponsesAPIAgent(SimpleServer):
    """Subclass and implement :meth:`responses` (the episode) and :meth:`run` (seed -> episode -> verify)."""

    config: BaseResponsesAPIAgentConfig
    server_type: ClassVar[str] = "responses_api_agents"

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        add_json_route(app, "/v1/responses", self.responses)
        add_json_route(app, "/run", self.run)
        add_json_route(app, "/aggregate_metrics", self.aggregate_metrics)
        return app

    async def responses(self, body: ResponseCreateParams, cookies: Cookies) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement responses()")

    async def run(self, body: BaseRunRequest, cookies: Cookies) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement run()")

    async def aggregate_metrics(self, body: AggregateMetricsRequest) -> AggregateMetrics | dict[str, Any]:
        """Default: compute locally (a subclass may proxy to its resources server)."""
        from gymfleet.rollouts.metrics import aggregate_metrics

        return aggregate_metrics(body.verify_responses)
