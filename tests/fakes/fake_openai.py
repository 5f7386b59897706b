"""A tiny real OpenAI-compatible upstream for tests (the LLM is the one thing we do not own).

It binds ``127.0.0.1:0``, records every request, and answers ``POST /v1/chat/completions``,
``POST /v1/responses``, ``POST /tokenize`` and ``GET /v1/models``. Answers come from a queue of scripted
:class:`Reply` objects, or from ``policy(request_json) -> Reply``, or default to the text
``"ok: <last user text>"``. Chat answers imitate vLLM's token-id extensions: with
``return_tokens_as_token_ids`` + ``logprobs`` the logprob tokens read ``token_id:<int>``; with
``return_token_ids`` the answer carries top-level ``prompt_token_ids`` and ``choices[0].token_ids``.

Use in-process::

    async with FakeOpenAI() as fake:
        fake.queue(Reply(tool_calls=[("get_weather", {"city": "sf"})]))
        ... call fake.base_url (ends in /v1) ...
        assert fake.requests[0].json["model"] == "m"

or as a process (prints ``PORT <n>`` on stdout once listening)::

    python tests/fakes/fake_openai.py [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["FakeOpenAI", "RecordedRequest", "Reply", "generation_ids", "prompt_ids"]


@dataclass
class Reply:
    """One scripted answer. With ``body`` set (or ``status`` >= 400) the fake answers exactly ``body`` with
    ``status`` instead of building a completion."""

    content: str | None = None
    tool_calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)
    reasoning_content: str | None = None
    finish_reason: str | None = None
    status: int = 200
    body: Any = None
    delay_s: float = 0.0


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


def prompt_ids(messages: list[dict[str, Any]]) -> list[int]:
    """The fake tokenizer's prompt ids: one id per message (deterministic, easy to assert on)."""
    return [100 + i for i in range(len(messages))]


def generation_ids(text: str) -> list[int]:
    """The fake tokenizer's generation ids: one id per character."""
    return [ord(c) for c in text]


class FakeOpenAI:
    """A real aiohttp server on 127.0.0.1 imitating an OpenAI/vLLM endpoint."""

    def __init__(self, *, policy: Callable[[dict[str, Any]], Reply] | None = None, model: str = "fake-model"):
        self.requests: list[RecordedRequest] = []
        self.replies: deque[Reply] = deque()
        self.policy = policy
        self.model = model
        self.port = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r.json for r in self.requests if r.path.endswith("/chat/completions")]

    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------------------------ handlers
    async def _record(self, request: web.Request) -> Any:
        body = await request.json() if request.can_read_body else None
        self.requests.append(RecordedRequest(request.method, request.path, dict(request.headers), body))
        return body

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        if self.replies:
            return self.replies.popleft()
        if self.policy is not None:
            return self.policy(body)
        messages = body.get("messages") or body.get("input") or []
        last = messages if isinstance(messages, str) else _last_user_text(messages)
        return Reply(content=f"ok: {last}")

    async def _delay(self, reply: Reply) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
        finally:
            self.in_flight -= 1

    async def _chat(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        reply = self._next_reply(body)
        await self._delay(reply)
        if reply.body is not None or reply.status >= 400:
            return web.json_response(reply.body, status=reply.status)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.reasoning_content is not None:
            message["reasoning_content"] = reply.reasoning_content
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{uuid.uuid4().hex[:12]}",
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": args if isinstance(args, str) else json.dumps(args),
                    },
                }
                for name, args in reply.tool_calls
            ]
        raw_text = reply.content or ""
        for _, args in reply.tool_calls:
            raw_text += args if isinstance(args, str) else json.dumps(args)
        gen_ids = generation_ids(raw_text)
        choice: dict[str, Any] = {
            "index": 0,
            "message": message,
            "finish_reason": reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop"),
            "logprobs": None,
        }
        if body.get("logprobs"):
            as_ids = body.get("return_tokens_as_token_ids")
            choice["logprobs"] = {
                "content": [
                    {
                        "token": f"token_id:{t}" if as_ids else chr(t),
                        "logprob": -0.5,
                        "bytes": None,
                        "top_logprobs": [],
                    }
                    for t in gen_ids
                ]
            }
        answer: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [choice],
            "usage": {
                "prompt_tokens": len(body.get("messages", [])),
                "completion_tokens": len(gen_ids),
                "total_tokens": len(body.get("messages", [])) + len(gen_ids),
            },
        }
        if body.get("return_token_ids"):
            answer["prompt_token_ids"] = prompt_ids(body.get("messages", []))
            choice["token_ids"] = gen_ids
        return web.json_response(answer)

    async def _responses(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        reply = self._next_reply(body)
        await self._delay(reply)
        if reply.body is not None or reply.status >= 400:
            return web.json_response(reply.body, status=reply.status)
        output: list[dict[str, Any]] = []
        if reply.content is not None or not reply.tool_calls:
            output.append(
                {
                    "id": f"msg_{uuid.uuid4().hex}",
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": reply.content or "", "annotations": []}],
                }
            )
        for name, args in reply.tool_calls:
            output.append(
                {
                    "id": f"fc_{uuid.uuid4().hex}",
                    "type": "function_call",
                    "call_id": f"call_{uuid.uuid4().hex[:12]}",
                    "name": name,
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                    "status": "completed",
                }
            )
        return web.json_response(
            {
                "id": f"resp_{uuid.uuid4().hex}",
                "object": "response",
                "created_at": int(time.time()),
                "model": body.get("model") or self.model,
                "status": "completed",
                "output": output,
                "tools": body.get("tools", []),
                "tool_choice": body.get("tool_choice", "auto"),
                "parallel_tool_calls": body.get("parallel_tool_calls", True),
                "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
            }
        )

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        tokens = prompt_ids(body.get("messages", []))
        return web.json_response({"count": len(tokens), "max_model_len": 4096, "tokens": tokens})

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
    return ""


async def _serve(port: int) -> None:
    fake = FakeOpenAI()
    await fake.start(port)
    print(f"PORT {fake.port}", flush=True)  # noqa: T201 - the parent reads the port from stdout
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible upstream for tests")
    parser.add_argument("--port", type=int, default=0)
    try:
        asyncio.run(_serve(parser.parse_args().port))
    except KeyboardInterrupt:
        pass
