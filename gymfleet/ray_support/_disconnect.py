"""ASGI middleware: cancel a request's handler when its client goes away.

Starlette keeps running a handler after the client disconnected; for a handler awaiting an offloaded call,
that wastes a worker until the call's timeout. This middleware reads the connection's ``http.disconnect``
(once the request body has been read) and cancels the handler task, so the ``CancelledError`` reaches
:func:`gymfleet.ray_support.run` / :class:`LocalPool`, which kill the remote work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["CancelOnDisconnect"]

logger = logging.getLogger("gymfleet.ray")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class CancelOnDisconnect:
    """Wrap an ASGI app; ``paths`` limits it to those request paths (default: every HTTP request)."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...] | None = None) -> None:
        self.app = app
        self.paths = paths
        self.cancelled = 0  # handlers cancelled because their client left

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.paths is not None and scope.get("path") not in self.paths):
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()
        response_done = asyncio.Event()
        disconnected: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        async def wrapped_receive() -> Message:
            if body_read.is_set():
                return await asyncio.shield(disconnected)  # the watcher owns receive() from here on
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read.set()
            return message

        async def wrapped_send(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                response_done.set()
            await send(message)

        handler = asyncio.create_task(self.app(scope, wrapped_receive, wrapped_send))
        left: list[bool] = []

        async def watch() -> None:
            await body_read.wait()
            message = await receive()
            if not disconnected.done():
                disconnected.set_result(message)
            if message["type"] == "http.disconnect" and not response_done.is_set() and not handler.done():
                self.cancelled += 1
                left.append(True)
                logger.info(
                    "client left %s %s: cancelling its handler", scope.get("method"), scope.get("path")
                )
                handler.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await handler
        except asyncio.CancelledError:
            if not left:
                raise  # we were cancelled ourselves (server shutdown), not by the watcher
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
