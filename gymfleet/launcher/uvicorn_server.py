"""A uvicorn ``Server`` for processes that own their signals and want to stop at once.

uvicorn's own server checks ``should_exit`` on a 0.1 s tick, so every stop waits up to 0.1 s before it
even begins, once per server and once more for the head. This one wakes the moment ``should_exit`` is
set. It also leaves SIGINT/SIGTERM to its owner: uvicorn's capture would re-raise the signal after
shutdown and kill the process before it can stop its process group (servers) or its children (the
launcher's embedded head).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import uvicorn

__all__ = ["PromptServer", "http_protocol"]

_TICK_S = 0.1  # uvicorn's housekeeping period (date header, request limit)


def http_protocol() -> Any:
    """uvicorn's ``http=``: httptools writing each small answer in one send (:mod:`gymfleet.server.coalesce`), or
    h11 where httptools is not installed."""
    import importlib.util

    if importlib.util.find_spec("httptools") is None:
        return "h11"
    from gymfleet.server.coalesce import CoalescingHttpToolsProtocol

    return CoalescingHttpToolsProtocol


class PromptServer(uvicorn.Server):
    """``uvicorn.Server`` that starts shutting down as soon as ``should_exit`` is set."""

    def __init__(self, config: uvicorn.Config) -> None:
        self._exit_requested = asyncio.Event()
        self._should_exit = False
        super().__init__(config)

    @property  # type: ignore[override]
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        if value:
            self._exit_requested.set()

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()

    async def main_loop(self) -> None:
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._exit_requested.wait(), _TICK_S)
            should_exit = await self.on_tick(counter)
