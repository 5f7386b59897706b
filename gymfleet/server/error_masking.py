"""Error answers never carry a secret (pure ASGI middleware).

Error messages name the URL that failed, and a URL may hold a key (``...?key=...``, ``https://user:key@host``); an
exception from a library may quote a header. This middleware buffers only error responses (status >= 400, small and
rare: the success path is untouched) and replaces every known secret value in their body with ``****``.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gymfleet.log_masking import MIN_MASKED_LEN

__all__ = ["ErrorMaskingMiddleware"]

_MASK = b"****"
_MAX_BUFFERED = 1024 * 1024  # a larger error body is passed through unchanged rather than held in memory


class ErrorMaskingMiddleware:
    """Mask ``secret_values`` in the bodies of error responses."""

    def __init__(self, app: ASGIApp, *, secret_values: Iterable[str]) -> None:
        self.app = app
        unique = {v.encode() for v in secret_values if isinstance(v, str) and len(v) >= MIN_MASKED_LEN}
        self._values = sorted(unique, key=len, reverse=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._values:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []
        size = 0
        passing_through = False

        async def masked_send(message: Message) -> None:
            nonlocal start, size, passing_through
            if message["type"] == "http.response.start":
                if int(message["status"]) < 400:
                    passing_through = True
                    await send(message)
                else:
                    start = message
                return
            if message["type"] != "http.response.body" or passing_through or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > _MAX_BUFFERED:
                passing_through = True
                await send(start)
                await send({"type": "http.response.body", "body": b"".join(chunks),
                            "more_body": message.get("more_body", False)})
                return
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            for value in self._values:
                body = body.replace(value, _MASK)
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, masked_send)
