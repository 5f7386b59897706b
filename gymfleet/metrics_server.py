"""``/metrics`` for processes that are not servers (a collector): a tiny app served in the caller's event loop.

``gymfleet collect --metrics-port 9400`` (or ``+metrics_port=9400``) serves this process's Prometheus registry while
the collection runs, behind the same fleet token (unless ``metrics_require_token: false``) and TLS as the servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gymfleet.auth import BearerAuthMiddleware
from gymfleet.errors import ServerStartupError
from gymfleet.launcher.ports import bind_socket
from gymfleet.metrics import metrics_endpoint
from gymfleet.security import current_settings
from gymfleet.tls import uvicorn_ssl_kwargs

__all__ = ["serve_metrics"]

logger = logging.getLogger("gymfleet.metrics")


class _QuietServer(uvicorn.Server):
    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()  # the collector owns SIGINT/SIGTERM


async def _liveness(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


@contextlib.asynccontextmanager
async def serve_metrics(host: str, port: int, *, startup_timeout_s: float = 10.0) -> AsyncIterator[int]:
    """Serve ``GET /metrics`` on ``host:port`` (port 0: the OS picks) while the block runs; yields the port.

    Raises:
        PortInUseError / AddressError: the address cannot be bound.
        ServerStartupError: the server did not start within ``startup_timeout_s``.
    """
    settings = current_settings()
    app = Starlette(routes=[Route("/", _liveness), Route("/metrics", metrics_endpoint)])
    app.add_middleware(BearerAuthMiddleware, token=settings.token, server="collector",
                       public_paths=() if settings.metrics_require_token else ("/metrics",))
    sock = bind_socket(host, port)
    bound = sock.getsockname()[1]
    server = _QuietServer(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                         timeout_graceful_shutdown=1.0, **uvicorn_ssl_kwargs(settings.tls)))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="gymfleet-metrics")
    deadline = time.monotonic() + startup_timeout_s
    try:
        while not server.started:
            if task.done():
                task.result()
                raise ServerStartupError(f"the metrics server on {host}:{bound} exited during startup",
                                         server_name="collector")
            if time.monotonic() > deadline:
                raise ServerStartupError(f"the metrics server on {host}:{bound} did not start within "
                                         f"{startup_timeout_s:.0f}s", server_name="collector")
            await asyncio.sleep(0.01)
        logger.info("collector metrics at %s://%s:%d/metrics", settings.scheme, host, bound)
        yield bound
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5.0)
        sock.close()
