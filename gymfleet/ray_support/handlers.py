"""HTTP answers for offload failures, in the body shape of every gymfleet server error.

``{"error": {"type": ..., "message": ..., "server": ..., "path": ..., "status": ..., "function": ...,
"backend": ...}}`` with

* ``offload_timeout`` (504) -- the call ran past its timeout and was killed (``timeout_s`` added);
* ``offload_remote_error`` (500) -- the offloaded function raised (``remote_type`` added);
* ``offload_worker_lost`` (503) -- its worker or node died;
* ``ray_unavailable`` (503) -- this server cannot join the Ray cluster.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from gymfleet.ray_support._errors import (
    OffloadError,
    OffloadTimeoutError,
    RayConnectError,
    RemoteTaskError,
    WorkerLostError,
)
from gymfleet.server.routes import json_response

__all__ = ["install_offload_error_handlers"]

logger = logging.getLogger("gymfleet.ray")


def install_offload_error_handlers(app: FastAPI, *, server_name: str) -> None:
    """Answer :class:`OffloadError` and :class:`RayConnectError` with typed JSON instead of a bare 500."""

    async def offload_error(request: Request, exc: Exception) -> Response:
        extra: dict[str, Any] = {}
        if isinstance(exc, OffloadTimeoutError):
            kind, status = "offload_timeout", 504
            extra["timeout_s"] = exc.timeout_s
        elif isinstance(exc, RemoteTaskError):
            kind, status = "offload_remote_error", 500
            extra["remote_type"] = exc.remote_type
        elif isinstance(exc, WorkerLostError):
            kind, status = "offload_worker_lost", 503
        elif isinstance(exc, RayConnectError):
            kind, status = "ray_unavailable", 503
        else:
            kind, status = "offload_error", 500
        if isinstance(exc, OffloadError):
            extra.update(function=exc.function, backend=exc.backend)
        logger.warning("%s %s: %s", request.method, request.url.path, exc)
        return json_response(
            {
                "error": {
                    "type": kind,
                    "message": str(exc),
                    "server": server_name,
                    "path": request.url.path,
                    "status": status,
                    **extra,
                }
            },
            status,
        )

    app.add_exception_handler(OffloadError, offload_error)
    app.add_exception_handler(RayConnectError, offload_error)
