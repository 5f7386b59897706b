"""Exception handlers: every failure leaves a server as typed JSON, never as a bare repr or a hang.

Body shape (all gymfleet servers)::

    {"error": {"type": "upstream_status" | "upstream_connect" | "upstream_timeout" | "upstream_disconnected" |
                       "server_not_found" | "internal",
               "message": str, "server": <this instance>, "upstream_server": <name or null>,
               "upstream_server_type": <server type or null>, "url": <upstream URL or null>, "status": int}}

Failures of a call to another server answer 502 (504 for a timeout, also when the upstream itself answered 504/408;
429 when it answered 429), so a collector can tell a broken model (``upstream_server_type: responses_api_models``)
from a broken environment (``resources_servers``), and a timeout or a rate limit from both. Work that ran past its
own deadline (:class:`~gymfleet.server.isolate.DeadlineExceededError`) answers ``504`` with type ``timeout``.

Every error answer carries ``x-gymfleet-error: <type>``: the server already retried its own upstream within bounds,
so the caller's transport must not retry it again (retries would multiply hop by hop).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response

from gymfleet.errors import (
    ClientError,
    ServerNotFoundError,
    UpstreamConnectError,
    UpstreamDisconnectedError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from gymfleet.server.isolate import DeadlineExceededError
from gymfleet.server.routes import json_response

__all__ = ["ERROR_HEADER", "install_error_handlers"]

ERROR_HEADER = "x-gymfleet-error"  # the same name as gymfleet.transport.FINAL_ERROR_HEADER

logger = logging.getLogger("gymfleet.server")

_CLIENT_ERROR_TYPES: list[tuple[type[ClientError], str, int]] = [
    (UpstreamStatusError, "upstream_status", 502),
    (UpstreamTimeoutError, "upstream_timeout", 504),
    (UpstreamConnectError, "upstream_connect", 502),
    (UpstreamDisconnectedError, "upstream_disconnected", 502),
    (ServerNotFoundError, "server_not_found", 502),
]


def install_error_handlers(
    app: FastAPI, *, server_name: str, server_type_of: Callable[[str], str | None]
) -> None:
    async def client_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ClientError)
        kind, status = "upstream_error", 502
        for cls, name, code in _CLIENT_ERROR_TYPES:
            if isinstance(exc, cls):
                kind, status = name, code
                break
        upstream_status = exc.status if isinstance(exc, UpstreamStatusError) else None
        if upstream_status in (408, 504):
            kind, status = "upstream_timeout", 504
        elif upstream_status == 429:
            kind, status = "upstream_rate_limited", 429
        logger.warning("%s %s failed calling '%s': %s", request.method, request.url.path, exc.server_name, exc)
        return _final(json_response(
            {
                "error": {
                    "type": kind,
                    "message": str(exc),
                    "server": server_name,
                    "path": request.url.path,
                    "upstream_server": exc.server_name,
                    "upstream_server_type": server_type_of(exc.server_name) if exc.server_name else None,
                    "url": exc.url,
                    "status": status,
                    "upstream_status": upstream_status,
                }
            },
            status,
        ), kind)

    async def deadline_error(request: Request, exc: Exception) -> Response:
        logger.warning("%s %s ran past its deadline: %s", request.method, request.url.path, exc)
        return _final(json_response(
            {
                "error": {
                    "type": "timeout",
                    "message": str(exc),
                    "server": server_name,
                    "path": request.url.path,
                    "upstream_server": None,
                    "upstream_server_type": None,
                    "url": None,
                    "status": 504,
                }
            },
            504,
        ), "timeout")

    async def internal_error(request: Request, exc: Exception) -> Response:
        logger.error("unhandled %s in %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
        return _final(json_response(
            {
                "error": {
                    "type": "internal",
                    "message": f"{type(exc).__name__}: {exc}",
                    "server": server_name,
                    "path": request.url.path,
                    "upstream_server": None,
                    "upstream_server_type": None,
                    "url": None,
                    "status": 500,
                }
            },
            500,
        ), "internal")

    app.add_exception_handler(ClientError, client_error)
    app.add_exception_handler(DeadlineExceededError, deadline_error)
    app.add_exception_handler(Exception, internal_error)


def _final(response: Response, kind: str) -> Response:
    response.headers[ERROR_HEADER] = kind
    return response
