"""A userspace TCP proxy that injects network faults on command (the kernel here has no ``netem``).

It listens on ``127.0.0.1:0`` and forwards every connection to one target. Modes (switch at any time, they apply to
open connections too):

* ``pass``: forward;
* ``latency``: wait ``latency_s`` before forwarding each chunk, both ways;
* ``stall``: stop forwarding in both directions but keep every socket open: a peer that went silent, a NAT that
  dropped the flow, a long call that sends no bytes;
* ``drop``: like ``stall``, and new connections are accepted and then never answered nor closed;
* ``reset``: new connections are reset at once; :meth:`FaultProxy.reset_all` resets the open ones.

The proxy runs its own event loop in a daemon thread, so tests (sync or async) and subprocess fleets can use it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Literal

__all__ = ["FaultProxy", "Mode"]

Mode = Literal["pass", "latency", "stall", "drop", "reset"]
_CHUNK = 65536
_START_TIMEOUT_S = 5.0
_STOP_TIMEOUT_S = 5.0


@dataclass
class ProxyStats:
    accepted: int = 0
    reset: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port`` with injectable faults.

    Use as a context manager: ``with FaultProxy("127.0.0.1", 8000) as proxy: ... proxy.set_mode("stall")``.
    """

    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = 0
        self.stats = ProxyStats()
        self._mode: Mode = "pass"
        self._latency_s = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._flowing: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------------------ control (any thread)
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(_START_TIMEOUT_S)
        return self

    def set_mode(self, mode: Mode, *, latency_s: float = 0.0) -> None:
        """Switch the fault; takes effect for open connections at their next chunk."""

        def apply() -> None:
            self._mode = mode
            self._latency_s = latency_s
            assert self._flowing is not None
            if mode in ("pass", "latency"):
                self._flowing.set()
            else:
                self._flowing.clear()

        self._call(apply)

    def reset_all(self) -> int:
        """Reset (RST) every open connection; returns how many."""
        return self._call(self._reset_open)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(_STOP_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_STOP_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, fn):  # type: ignore[no-untyped-def]
        async def run():  # type: ignore[no-untyped-def]
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(_START_TIMEOUT_S)

    # ------------------------------------------------------------------------------ the loop's side
    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, self.listen_host, 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_open()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=_STOP_TIMEOUT_S)

    def _reset_open(self) -> int:
        count = 0
        for writer in list(self._writers):
            _reset(writer)
            count += 1
        self._writers.clear()
        self.stats.reset += count
        return count

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self._mode == "reset":
                self.stats.reset += 1
                _reset(writer)
                return
            self._writers.add(writer)
            if self._mode == "drop":  # accepted, never answered, never closed (until the proxy stops)
                await asyncio.Event().wait()
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                _reset(writer)
                return
            self._writers.add(up_writer)
            pumps = [
                asyncio.ensure_future(self._pump(reader, up_writer, up=True)),
                asyncio.ensure_future(self._pump(up_reader, writer, up=False)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.wait(pumps, timeout=_STOP_TIMEOUT_S)
                for w in (writer, up_writer):
                    self._writers.discard(w)
                    with contextlib.suppress(Exception):
                        w.close()
        except asyncio.CancelledError:
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        assert self._flowing is not None
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                with contextlib.suppress(Exception):
                    writer.write_eof()
                return
            await self._flowing.wait()  # stall/drop: hold the bytes, keep the socket open
            if self._mode == "latency" and self._latency_s > 0:
                await asyncio.sleep(self._latency_s)
            writer.write(data)
            await writer.drain()
            if up:
                self.stats.bytes_up += len(data)
            else:
                self.stats.bytes_down += len(data)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() sends RST
    writer.transport.abort()
