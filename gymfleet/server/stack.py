"""The middleware every gymfleet app gets (servers and the head), outermost first:

1. :class:`~gymfleet.metrics.MetricsMiddleware`: counts every answer, refusals included;
2. :class:`~gymfleet.auth.BearerAuthMiddleware`: the fleet token, checked before any body is read;
3. :class:`~gymfleet.server.limits.LimitsMiddleware`: header, body size and JSON depth limits;
4. :class:`~gymfleet.server.error_masking.ErrorMaskingMiddleware`: no secret value in an error body;

plus ``GET /metrics``. Apps add their own middleware (session cookies) before calling :func:`install_fleet_stack`,
so theirs runs inside these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI

from gymfleet.auth import BearerAuthMiddleware
from gymfleet.metrics import MetricsMiddleware, metrics_endpoint
from gymfleet.security import SecuritySettings, settings_from_config
from gymfleet.server.error_masking import ErrorMaskingMiddleware
from gymfleet.server.limits import InputLimits, LimitsMiddleware

__all__ = ["install_fleet_stack"]


def install_fleet_stack(
    app: FastAPI,
    *,
    server_name: str,
    config: Mapping[str, Any] | None,
    rollout_paths: Iterable[str] = (),
    settings: SecuritySettings | None = None,
) -> SecuritySettings:
    """Add metrics, auth and input limits to ``app`` and serve ``GET /metrics``; return the settings used.

    Args:
        app: the app, before it starts.
        server_name: the ``server`` label of its metrics and the name in its error bodies.
        config: the fleet config (token, ``metrics_require_token``, limits); the environment's token wins.
        rollout_paths: POST paths counted as rollouts (an agent's ``/run``).
        settings: settings already built for this process (default: built from ``config``).
    """
    settings = settings or settings_from_config(config)
    app.add_middleware(ErrorMaskingMiddleware, secret_values=settings.secret_values)
    app.add_middleware(LimitsMiddleware, limits=InputLimits.from_config(config), server=server_name)
    app.add_middleware(
        BearerAuthMiddleware,
        token=settings.token,
        server=server_name,
        public_paths=() if settings.metrics_require_token else ("/metrics",),
    )
    app.add_middleware(MetricsMiddleware, server=server_name, rollout_paths=rollout_paths)
    app.add_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    return settings
