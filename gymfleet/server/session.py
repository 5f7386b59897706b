"""Per-server session cookies, signed with a per-deployment secret.

Each server sets a cookie named ``<ServerClass>___<instance name>`` (distinct names let an agent carry the cookies of
several servers without collision, as in NeMo Gym). Its value is ``<session_id>.<instance_id>.<signature>``:

* ``session_id`` is what stateful server code sees through :func:`current_session_id`;
* ``instance_id`` names the replica that created the session, so clients route the rest of the rollout back to it;
* the signature is an HMAC-SHA256 over both with the deployment's secret (random, never derived from names), so a
  forged or tampered cookie is ignored and a fresh session is started instead.

A server that keeps session state in process memory (resources servers, ``strict``) refuses a valid cookie of
*another* instance with a typed ``409 session_lost``: that instance died (the launcher restarted the server on the
same port) or the session was routed to another replica, so the state of the rollout is gone. Carrying on would score
the rollout against an empty session (a silent wrong reward); failing it lets the collector run it again from the
start. ``/seed_session`` starts a new session instead. Stateless servers (models, agents) re-issue the cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Iterable
from contextvars import ContextVar

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SessionMiddleware", "current_session_id", "sign_session"]

_session_id: ContextVar[str | None] = ContextVar("gymfleet_session_id", default=None)


def current_session_id() -> str:
    """The session id of the request being handled (a new one on the first call of a rollout)."""
    value = _session_id.get()
    if value is None:
        raise RuntimeError("current_session_id() called outside a request handled by a gymfleet server")
    return value


def _signature(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def sign_session(secret: bytes, session_id: str, instance_id: str) -> str:
    payload = f"{session_id}.{instance_id}"
    return f"{payload}.{_signature(secret, payload)}"


def _verify(secret: bytes, value: str) -> tuple[str, str] | None:
    parts = value.split(".")
    if len(parts) != 3:
        return None
    session_id, instance_id, sig = parts
    if not hmac.compare_digest(sig, _signature(secret, f"{session_id}.{instance_id}")):
        return None
    return session_id, instance_id


def _find_cookie(header: bytes, name: bytes) -> str | None:
    for part in header.split(b";"):
        key, sep, value = part.strip().partition(b"=")
        if sep and key == name:
            return value.strip(b'"').decode("latin-1")
    return None


class SessionMiddleware:
    """Pure ASGI middleware (no per-request task or body copy): reads/sets the session cookie."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        cookie_name: str,
        secret: bytes,
        instance_id: str,
        strict: bool = False,
        server_name: str = "",
        fresh_paths: Iterable[str] = ("/seed_session",),
    ) -> None:
        self.app = app
        self.cookie_name = cookie_name
        self._cookie_key = cookie_name.encode("latin-1")
        self.secret = secret
        self.instance_id = instance_id
        self.strict = strict
        self.server_name = server_name
        self.fresh_paths = frozenset(fresh_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = None
        for key, value in scope["headers"]:
            if key == b"cookie":
                raw = _find_cookie(value, self._cookie_key)
                if raw is not None:
                    found = _verify(self.secret, raw)
                    break
        if found is not None and found[1] == self.instance_id:
            token = _session_id.set(found[0])
            try:
                await self.app(scope, receive, send)
            finally:
                _session_id.reset(token)
            return
        if found is not None and self.strict:
            if scope["path"] not in self.fresh_paths:
                await self._session_lost(found, scope, send)
                return
            found = None  # a new rollout seeding with a stale cookie: a new session
        # New session, or a session another replica created (that one is gone or we took over): (re)issue it.
        session_id = found[0] if found is not None else uuid.uuid4().hex
        cookie = (
            f"{self.cookie_name}={sign_session(self.secret, session_id, self.instance_id)}; Path=/; HttpOnly; "
            "SameSite=lax"
        ).encode("latin-1")

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"set-cookie", cookie)]
            await send(message)

        token = _session_id.set(session_id)
        try:
            await self.app(scope, receive, send_with_cookie)
        finally:
            _session_id.reset(token)

    async def _session_lost(self, found: tuple[str, str], scope: Scope, send: Send) -> None:
        message = (
            f"Session {found[0]} was created by instance {found[1]} of server '{self.server_name}', not by this "
            f"process ({self.instance_id}): that process is gone (restarted) or the session was routed to another "
            "replica, so the rollout's state is lost. Run the rollout again from /seed_session (the collector "
            "retries it)."
        )
        body = orjson.dumps({"error": {"type": "session_lost", "message": message, "server": self.server_name,
                                       "path": scope["path"], "status": 409}})
        await send({
            "type": "http.response.start",
            "status": 409,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"x-gymfleet-error", b"session_lost")],
        })
        await send({"type": "http.response.body", "body": body})
