"""A small real OpenAI-compatible upstream (the LLM is what we do not own) with faults on a schedule.

It answers ``POST /v1/responses`` and ``POST /v1/chat/completions`` like a tool-calling model (call the first tool
offered with ``{"city": "sf"}``-style arguments, then answer with a message once a tool result is in the input) and
``GET /v1/models``. Faults:

* ``latency_s``: every answer waits this long;
* ``rate_per_s``: a token bucket (burst = one second's worth); a request over the quota gets ``429`` with
  ``Retry-After: retry_after_s`` (what a hosted API or an overloaded vLLM router does);
* ``fail_every_n`` / ``fail_status``: every n-th request answers that status.

Every request is recorded (arrival time, a key of the body, so a retry of the same request has the same key, the
status answered, requests in flight), which is what rate-limit tests measure backoff and storms from.

In a test: ``with Upstream(rate_per_s=20) as up: ... up.base_url``. As a process (multi-host tests)::

    python -m tests.faults.tools.upstream --host 10.213.0.2 --port 0 [--latency-ms 100]   # prints "PORT <n>"

``Upstream(sock=...)`` serves a socket bound earlier, so a test can hold the port (connections refused) and start
serving later: a model endpoint that is "not serving yet".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["Upstream", "UpstreamRecord"]

_START_TIMEOUT_S = 5.0


@dataclass
class UpstreamRecord:
    t: float  # monotonic arrival time
    key: str  # hash of the request body: a retried request has the key of its first attempt
    path: str
    status: int = 0
    in_flight: int = 0


@dataclass
class Upstream:
    latency_s: float = 0.0
    rate_per_s: float | None = None
    retry_after_s: float | None = 1.0
    fail_every_n: int = 0
    fail_status: int = 500
    host: str = "127.0.0.1"
    port: int = 0
    sock: socket.socket | None = None
    records: list[UpstreamRecord] = field(default_factory=list)
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self._in_flight = 0
        self._count = 0
        self._tokens = float(self.rate_per_s or 0.0)
        self._refilled = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/v1"

    # ------------------------------------------------------------------------------ lifecycle
    async def start_async(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        if self.sock is not None:
            self.sock.listen(1024)
            site: web.BaseSite = web.SockSite(self._runner, self.sock)
        else:
            site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop_async(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self) -> Upstream:
        """Serve from a daemon thread with its own event loop."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-upstream", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.start_async(), self._loop).result(_START_TIMEOUT_S)
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.stop_async(), self._loop).result(_START_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_START_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()
        self._loop = None

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> list[UpstreamRecord]:
        with self._lock:
            return list(self.records)

    # ------------------------------------------------------------------------------ faults
    def _admit(self) -> int:
        """The status to answer (0 = serve normally)."""
        self._count += 1
        if self.fail_every_n and self._count % self.fail_every_n == 0:
            return self.fail_status
        if self.rate_per_s:
            now = time.monotonic()
            self._tokens = min(self.rate_per_s, self._tokens + (now - self._refilled) * self.rate_per_s)
            self._refilled = now
            if self._tokens < 1.0:
                return 429
            self._tokens -= 1.0
        return 0

    async def _serve(self, request: web.Request, build: Any) -> web.Response:
        raw = await request.read()
        rec = UpstreamRecord(time.monotonic(), hashlib.sha1(raw).hexdigest()[:16], request.path)
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        rec.in_flight = self._in_flight
        try:
            status = self._admit()
            if status == 0 and self.latency_s > 0:
                await asyncio.sleep(self.latency_s)
            if status:
                headers = {}
                if status == 429 and self.retry_after_s is not None:
                    headers["Retry-After"] = f"{self.retry_after_s:g}"
                body = {"error": {"message": f"injected {status}", "type": "rate_limit" if status == 429 else "server"}}
                rec.status = status
                return web.json_response(body, status=status, headers=headers)
            rec.status = 200
            return web.json_response(build(json.loads(raw or b"{}")))
        finally:
            self._in_flight -= 1
            with self._lock:
                self.records.append(rec)

    async def _responses(self, request: web.Request) -> web.Response:
        return await self._serve(request, _response_body)

    async def _chat(self, request: web.Request) -> web.Response:
        return await self._serve(request, _chat_body)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fault-model", "object": "model"}]})


# ---------------------------------------------------------------------------------- answers
def _wants_tool(items: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str | None:
    last = items[-1] if items else {}
    if last.get("type") == "function_call_output" or last.get("role") == "tool" or not tools:
        return None
    tool = tools[0].get("function", tools[0])
    return str(tool.get("name", "tool"))


def _response_body(body: dict[str, Any]) -> dict[str, Any]:
    items = body.get("input")
    items = [{"role": "user", "content": items}] if isinstance(items, str) else (items or [])
    tool = _wants_tool(items, body.get("tools") or [])
    if tool:
        item: dict[str, Any] = {"type": "function_call", "id": f"fc_{uuid.uuid4().hex[:12]}",
                                "call_id": f"call_{uuid.uuid4().hex[:12]}", "name": tool,
                                "arguments": json.dumps({"city": "sf"}), "status": "completed"}
    else:
        item = {"type": "message", "id": f"msg_{uuid.uuid4().hex[:12]}", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": "It is cold in sf.", "annotations": []}]}
    return {"id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
            "model": body.get("model") or "fault-model", "status": "completed", "output": [item],
            "tools": body.get("tools") or [], "tool_choice": body.get("tool_choice", "auto"),
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2,
                      "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}}


def _chat_body(body: dict[str, Any]) -> dict[str, Any]:
    tool = _wants_tool(body.get("messages") or [], body.get("tools") or [])
    message: dict[str, Any] = {"role": "assistant", "content": None if tool else "It is cold in sf."}
    if tool:
        message["tool_calls"] = [{"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                                  "function": {"name": tool, "arguments": json.dumps({"city": "sf"})}}]
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or "fault-model",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool else "stop",
                         "logprobs": None}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


async def _main(args: argparse.Namespace) -> None:
    upstream = Upstream(latency_s=args.latency_ms / 1000, rate_per_s=args.rate_per_s, host=args.host, port=args.port)
    await upstream.start_async()
    sys.stdout.write(f"PORT {upstream.port}\n")
    sys.stdout.flush()
    try:
        await asyncio.Event().wait()  # until the test stops the process
    finally:
        await upstream.stop_async()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible upstream with faults (tests only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rate-per-s", type=float, default=None)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args()))
