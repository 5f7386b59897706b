"""CoalescingHttpToolsProtocol: a small answer leaves in one TCP segment (uvicorn's own protocol sends two), and
keep-alive, streaming, HEAD and Expect: 100-continue answers are unchanged.

Segments are counted with the client socket's ``TCP_INFO.tcpi_segs_in`` (Linux); the plain protocol is the control
that shows the count would see two segments per answer."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from gymfleet.launcher.ports import bind_socket
from gymfleet.server.coalesce import CoalescingHttpToolsProtocol

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="counts segments with Linux TCP_INFO")

_SEGS_IN_OFFSET = 140  # struct tcp_info: u32 tcpi_segs_in (Linux >= 4.2)


def app() -> FastAPI:
    a = FastAPI()

    @a.post("/echo")
    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        return {"echo": body}

    @a.get("/stream")
    async def stream() -> StreamingResponse:
        async def parts():  # type: ignore[no-untyped-def]
            for i in range(3):
                await asyncio.sleep(0.01)  # each part in a later loop step than the head
                yield f"part{i};".encode()

        return StreamingResponse(parts(), media_type="text/plain")

    return a


@contextmanager
def serving(http: Any) -> Iterator[int]:
    sock = bind_socket("127.0.0.1")
    server = uvicorn.Server(uvicorn.Config(app(), http=http, loop="asyncio", log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _request(path: str, body: bytes = b"", method: str = "POST", extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return (head + extra + "\r\n").encode() + body


def _read_response(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = int(lengths[0])
    while len(rest) < length:
        rest += conn.recv(65536)
    return head + b"\r\n\r\n" + rest


def _segments_in(conn: socket.socket) -> int:
    info = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int(struct.unpack_from("I", info, _SEGS_IN_OFFSET)[0])


def _segments_per_answer(port: int, n: int = 20) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        for _ in range(5):  # past the connection's quick-ACK start
            conn.sendall(_request("/echo", b'{"a": 1}'))
            _read_response(conn)
        before = _segments_in(conn)
        for i in range(n):
            conn.sendall(_request("/echo", b'{"i": %d}' % i))
            assert _read_response(conn).endswith(b'{"echo":{"i":%d}}' % i)
        return (_segments_in(conn) - before) / n


def test_one_segment_per_answer_where_uvicorn_sends_two() -> None:
    with serving(CoalescingHttpToolsProtocol) as port:
        coalesced = _segments_per_answer(port)
    with serving("httptools") as port:
        plain = _segments_per_answer(port)
    assert plain >= 1.8, f"control: uvicorn's own protocol should send head and body apart ({plain})"
    assert coalesced <= 1.25, coalesced


def test_streaming_head_and_expect_continue_still_work() -> None:
    with serving(CoalescingHttpToolsProtocol) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = c.recv(65536)
            assert chunk, "connection closed mid-stream"
            data += chunk
        assert data.startswith(b"HTTP/1.1 200") and b"part0;" in data and b"part2;" in data
        c.sendall(_request("/echo", b"", method="HEAD"))  # HEAD: head only, nothing held forever
        head = b""
        while b"\r\n\r\n" not in head:
            head += c.recv(65536)
        assert head.startswith(b"HTTP/1.1 405")
        body = b'{"b": 2}'
        c.sendall(_request("/echo", body, extra="expect: 100-continue\r\n").removesuffix(body))  # head only
        interim = c.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
        c.sendall(body)
        assert _read_response(c).endswith(b'{"echo":{"b":2}}')
