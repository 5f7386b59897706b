"""One packet per small HTTP answer: uvicorn's httptools protocol with the response head held for its body.

uvicorn writes a response's status line and headers as soon as the app sends ``http.response.start``, and the body
with the next message: two ``send()`` calls, two packets, and for the caller two wake-ups to read one answer. On the
machines gymfleet runs on (virtual machines, 2 cores) a wake-up of another process costs more than the whole request
parse, and a rollout is six hops. :class:`CoalescingHttpToolsProtocol` gives uvicorn a transport that holds a
response head until the next write (the body, normally in the same event-loop step) and sends both together; a head
whose body is not written in the same step goes out at the end of that step (``loop.call_soon``), so nothing waits
longer than one loop iteration. Everything else about the transport is the real one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol"]

_HEAD_END = b"\r\n\r\n"


class _HeadHoldingTransport:
    """A transport proxy that joins a response head with the write after it (see the module docstring)."""

    __slots__ = ("_flush_handle", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush_handle: asyncio.Handle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
            self._transport.write(held + bytes(data))
            return
        if isinstance(data, bytes) and data.startswith(b"HTTP/") and data.endswith(_HEAD_END):
            self._held = data
            self._flush_handle = self._loop.call_soon(self._flush)
            return
        self._transport.write(data)

    def _flush(self) -> None:
        self._flush_handle = None
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush()
        self._transport.close()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing each small response in one ``send()`` (pass as ``Config(http=...)``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadHoldingTransport(transport, self.loop))  # type: ignore[arg-type]
