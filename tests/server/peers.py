"""A small real HTTP peer (aiohttp) for transport/client tests: we do not own it, so it may be scripted."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web


class Peer:
    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.app = web.Application()
        self.app.router.add_route("*", "/{name}", self.handle)
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        n = self.hits[name] = self.hits.get(name, 0) + 1
        if name == "ok":
            body = await request.read()
            return web.json_response({"ok": True, "body": body.decode() or None, "cookies": dict(request.cookies)},
                                     headers={"Set-Cookie": "peer=1"})
        if name == "flaky":  # 503 twice (Retry-After 0.1 s), then 200
            if n <= 2:
                return web.json_response({"n": n}, status=503, headers={"Retry-After": "0.1"})
            return web.json_response({"n": n})
        if name == "always503":
            return web.json_response({"error": "down"}, status=503)
        if name == "teapot":
            return web.json_response({"error": {"type": "x"}}, status=418)
        if name == "slow":
            await asyncio.sleep(5)
            return web.json_response({})
        if name == "drop":  # close the connection without answering
            assert request.transport is not None
            request.transport.close()
            await asyncio.sleep(0.1)
            return web.Response()
        return web.json_response({"error": "no route"}, status=404)


@contextlib.asynccontextmanager
async def running_peer() -> AsyncIterator[Peer]:
    peer = Peer()
    runner = web.AppRunner(peer.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    peer.url = f"http://127.0.0.1:{port}"
    try:
        yield peer
    finally:
        await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cfg_with(name: str, url: str, server_type: str = "resources_servers") -> dict[str, Any]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return {name: {server_type: {"impl": {"entrypoint": "app.py", "host": host, "port": int(port)}}}}
