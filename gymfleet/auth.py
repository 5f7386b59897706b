"""The fleet token: an optional shared bearer token that every route except liveness requires.

Set it in the config (``fleet_token: ...``, best in env.yaml) or the environment (``GYMFLEET_TOKEN``, which wins).
With a token set, every request to a server or the head must carry ``Authorization: Bearer <token>`` (compared in
constant time) except ``GET /`` (liveness, and the head's dashboard page, which holds no data) and, with
``metrics_require_token: false``, ``GET /metrics``. Anything else gets a 401 JSON error saying what to send.
gymfleet's own clients send the token by themselves (see :mod:`gymfleet.security`). Without a token nothing is
checked (the tutorial's flow on a trusted network); a server that listens on a non-loopback address without one logs
a prominent warning at startup.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["AUTHENTICATED_SCOPE_KEY", "BearerAuthMiddleware", "is_authenticated", "warn_if_exposed"]

logger = logging.getLogger("gymfleet.auth")

AUTHENTICATED_SCOPE_KEY = "gymfleet.authenticated"
_LIVENESS_METHODS = frozenset({"GET", "HEAD"})


def is_authenticated(scope: Scope) -> bool:
    """True when this request carried the fleet token (always False when no token is configured)."""
    return bool(scope.get(AUTHENTICATED_SCOPE_KEY))


def _bearer(scope: Scope) -> bytes | None:
    for key, value in scope["headers"]:
        if key == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() != b"bearer":
                return b""
            return credentials.strip()
    return None


class BearerAuthMiddleware:
    """Pure ASGI middleware: require the fleet token on every route but liveness (and the public paths).

    Args:
        app: the wrapped app.
        token: the fleet token; None turns the check off.
        server: the server's name, for error bodies.
        public_paths: GET paths served without the token besides ``/`` (e.g. ``/metrics`` when configured so).
    """

    def __init__(
        self, app: ASGIApp, *, token: str | None, server: str = "", public_paths: Iterable[str] = ()
    ) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self.server = server
        self.public_paths = frozenset({"/", *public_paths})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._token is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        presented = _bearer(scope)
        if presented and hmac.compare_digest(presented, self._token):
            scope[AUTHENTICATED_SCOPE_KEY] = True
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] in _LIVENESS_METHODS and scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if presented is None:
            why = "the request has no Authorization header"
        elif presented == b"":
            why = "the Authorization header is not 'Bearer <token>'"
        else:
            why = "the bearer token does not match this fleet's token"
        message = (
            f"Unauthorized: {why}. This fleet requires 'Authorization: Bearer <fleet token>' on every route except "
            "GET / (set the same token on the client: env GYMFLEET_TOKEN or config key fleet_token)."
        )
        body = orjson.dumps(
            {"error": {"type": "unauthorized", "message": message, "server": self.server, "path": scope["path"],
                       "status": 401}}
        )
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="gymfleet"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def warn_if_exposed(host: str, token: str | None, *, what: str) -> bool:
    """Log a prominent WARNING when ``what`` listens on a non-loopback ``host`` without a fleet token.

    Returns True when it warned. Never raises: an unresolvable host counts as exposed.
    """
    if token:
        return False
    from gymfleet.errors import GymFleetError
    from gymfleet.launcher.addresses import is_loopback

    try:
        if is_loopback(host):
            return False
    except (GymFleetError, OSError):
        pass
    logger.warning(
        "\n%s\n!! SECURITY: %s listens on %s, reachable from other machines, WITHOUT a fleet token.\n"
        "!! Anyone who can reach it can call every route and read the fleet config. Set a token\n"
        "!! (GYMFLEET_TOKEN=... or fleet_token: ... in env.yaml) on every node, or bind 127.0.0.1.\n%s",
        "!" * 100, what, host, "!" * 100,
    )
    return True
