"""Serve an ASGI app with real uvicorn on 127.0.0.1 (OS-chosen port) inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

__all__ = ["live_server"]


@contextlib.asynccontextmanager
async def live_server(app: Any, *, start_timeout_s: float = 5.0) -> AsyncIterator[str]:
    """Yield ``http://127.0.0.1:<port>`` while uvicorn serves ``app``; stop it on exit, also on failure."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(int(start_timeout_s / 0.01)):
            if server.started:
                break
            if task.done():
                task.result()  # raises the startup error
                raise RuntimeError("uvicorn exited before it started serving")
            await asyncio.sleep(0.01)
        else:
            raise TimeoutError(f"uvicorn did not start serving within {start_timeout_s}s")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, timeout=5.0)
        finally:
            sock.close()
