"""Input limits: what a client may send before the app sees it (pure ASGI middleware).

* headers larger than ``max_header_bytes`` in total -> 431;
* a body larger than ``max_request_bytes`` -> 413, refused from ``Content-Length`` before reading, or as soon as a
  chunked body crosses the limit (the rest is never buffered);
* a JSON body nested deeper than ``max_json_depth`` -> 400 (a deep document would otherwise exhaust the parser's or
  the validator's recursion and answer 500), and a JSON body that is not UTF-8 -> 400 (FastAPI's 422 would try to
  echo the undecodable bytes and fail).

Invalid bodies within the limits stay FastAPI's 422 with the field path. Config keys of the same names set the limits
for a fleet (defaults: 64 MiB, depth 200, 64 KiB of headers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["InputLimits", "LimitsMiddleware", "json_depth_exceeds", "replay_body"]

_NOT_STRUCTURE = bytes(set(range(256)) - set(b'[]{}"'))
_SQUARE = bytes.maketrans(b"{}", b"[]")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class InputLimits:
    """The limits of one server (see the module docstring)."""

    max_request_bytes: int = 64 * 1024 * 1024
    max_json_depth: int = 200
    max_header_bytes: int = 64 * 1024

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> InputLimits:
        """Read ``max_request_bytes``, ``max_json_depth`` and ``max_header_bytes`` (missing keys keep defaults)."""
        values = {k: int(v) for k, v in (config or {}).items() if k in cls.__dataclass_fields__ and v is not None}
        return cls(**values)


def json_depth_exceeds(body: bytes, max_depth: int) -> bool:
    """True when the JSON text ``body`` nests arrays/objects deeper than ``max_depth``.

    Only bytes methods (C speed, no per-match Python objects): a body with fewer brackets than the limit is never
    scanned; otherwise escapes are dropped, everything but brackets and quotes is deleted (``{}`` become ``[]``: only
    depth matters), string contents are cut out, and the innermost pairs are stripped once per level, at most
    ``max_depth`` passes over the brackets alone. Malformed documents are left for the JSON parser to report.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    # In JSON every backslash starts an escape: drop escaped backslashes, then escaped quotes; real quotes remain.
    skeleton = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(_SQUARE, _NOT_STRUCTURE)
    brackets = b"".join(skeleton.split(b'"')[::2])  # even pieces lie outside strings
    for _ in range(max_depth):
        shorter = brackets.replace(b"[]", b"")
        if not shorter or len(shorter) == len(brackets):
            return False
        brackets = shorter
    return b"[]" in brackets


def _is_utf8(body: bytes) -> bool:
    if body.isascii():  # C speed, no copy: the usual case
        return True
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class LimitsMiddleware:
    """Pure ASGI middleware enforcing :class:`InputLimits`; answers errors in gymfleet's JSON error shape."""

    def __init__(self, app: ASGIApp, *, limits: InputLimits | None = None, server: str = "") -> None:
        self.app = app
        self.limits = limits or InputLimits()
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits
        header_bytes = 0
        declared: int | None = None
        is_json = True
        is_binary = False
        for key, value in scope["headers"]:
            header_bytes += len(key) + len(value)
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._error(send, scope, 400, "bad_request", "Content-Length is not a number.")
                    return
            elif key == b"content-type":
                lowered = value.lower()
                is_json = b"json" in lowered
                is_binary = lowered.startswith((b"multipart/", b"application/octet-stream"))
        if header_bytes > limits.max_header_bytes:
            await self._error(send, scope, 431, "headers_too_large",
                              f"The request headers total {header_bytes} bytes, over the limit of "
                              f"{limits.max_header_bytes} (max_header_bytes). Send fewer or smaller headers.")
            return
        if declared is not None and declared > limits.max_request_bytes:
            await self._error(send, scope, 413, "request_too_large", self._too_large_message(declared))
            return
        if scope["method"] not in _BODY_METHODS or declared == 0:
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read_body(receive)
        except _TooLarge:
            await self._error(send, scope, 413, "request_too_large", self._too_large_message(None))
            return
        except _Disconnected:
            return  # the client left mid-body: nobody to answer, nothing for the app to do
        if not is_binary and not _is_utf8(body):
            # FastAPI would echo the undecodable bytes in its 422 and fail to encode them (a 500).
            await self._error(send, scope, 400, "invalid_body",
                              "The body is not UTF-8 text; send JSON encoded as UTF-8.")
            return
        if is_json and json_depth_exceeds(body, limits.max_json_depth):
            await self._error(send, scope, 400, "json_too_deep",
                              f"The JSON body nests deeper than {limits.max_json_depth} levels (max_json_depth). "
                              "Flatten the document.")
            return
        await self.app(scope, replay_body(body, receive), send)

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_request_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _too_large_message(self, declared: int | None) -> str:
        size = f" of {declared} bytes" if declared is not None else ""
        return (f"The request body{size} is over the limit of {self.limits.max_request_bytes} bytes "
                "(max_request_bytes). Send less, or raise max_request_bytes in the fleet config.")

    async def _error(self, send: Send, scope: Scope, status: int, kind: str, message: str) -> None:
        body = orjson.dumps({"error": {"type": kind, "message": message, "server": self.server,
                                       "path": scope.get("path"), "status": status}})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives an app ``body`` (already read) as one message, then waits on the real one."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as the server would

    return replay
