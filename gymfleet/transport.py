"""HTTP transport: one pooled aiohttp session per event loop, deadlines, bounded retries.

Everything gymfleet sends over HTTP (server to server, server to upstream model, collector to agent) goes through
:func:`send`. It never waits without a deadline and never retries without a bound:

* connect timeout (default 10 s) and total timeout (default 900 s) on every request;
* connection errors (refused, reset, unreachable, connect timeout) and a peer that closed the connection are retried,
  as are 429/502/503/504 answers, with capped exponential backoff and full jitter; ``Retry-After`` is honoured;
* after the last attempt the failure is raised as a typed :mod:`gymfleet.errors` exception naming the server, the URL
  and the cause.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from gymfleet.errors import (
    UpstreamConnectError,
    UpstreamDisconnectedError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)

__all__ = ["Limits", "Response", "RetryPolicy", "Timeouts", "close_sessions", "get_session", "send"]

logger = logging.getLogger("gymfleet.transport")


@dataclass(frozen=True)
class Timeouts:
    """Deadlines of one request. ``total`` covers the whole exchange including reading the body."""

    connect: float = 10.0
    total: float | None = 900.0


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with capped exponential backoff and full jitter."""

    max_attempts: int = 4
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 8.0
    retry_statuses: frozenset[int] = field(default_factory=lambda: frozenset({429, 502, 503, 504}))
    retry_after_max_s: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Sleep before retry number ``attempt`` (1-based): full jitter over a capped exponential."""
        cap = min(self.backoff_max_s, self.backoff_initial_s * (2 ** (attempt - 1)))
        return random.uniform(cap / 2, cap)


@dataclass(frozen=True)
class Limits:
    """Connection pool sizing. 10k in-flight requests per process fit the default."""

    total: int = 16384
    per_host: int = 0  # 0 = only the total bounds it
    keepalive_s: float = 15.0  # below the servers' 30 s idle timeout, so a pooled socket is never stale


NO_RETRY = RetryPolicy(max_attempts=1)
DEFAULT_TIMEOUTS = Timeouts()
DEFAULT_RETRY = RetryPolicy()
DEFAULT_LIMITS = Limits()


class Response:
    """A fully read HTTP response (the connection is back in the pool when you get it)."""

    __slots__ = ("status", "headers", "cookies", "content", "url", "server_name")

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        cookies: dict[str, str],
        content: bytes,
        url: str,
        server_name: str | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.cookies = cookies
        self.content = content
        self.url = url
        self.server_name = server_name

    @property
    def ok(self) -> bool:
        return self.status < 400

    def json(self) -> Any:
        return orjson.loads(self.content)

    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def raise_for_status(self) -> None:
        if self.status < 400:
            return
        try:
            body: Any = self.json()
        except orjson.JSONDecodeError:
            body = self.text()[:2000]
        who = f"server '{self.server_name}'" if self.server_name else "upstream"
        raise UpstreamStatusError(
            f"{who} answered HTTP {self.status} for {self.url}: {_short(body)}",
            status=self.status,
            body=body,
            server_name=self.server_name,
            url=self.url,
        )

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.url}>"


def _short(body: Any, limit: int = 500) -> str:
    text = body if isinstance(body, str) else orjson.dumps(body).decode()
    return text if len(text) <= limit else text[:limit] + "..."


# ------------------------------------------------------------------------------------------- sessions
_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


def _keepalive_socket(addr_info: Any) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    # Detect silently dropped connections (NAT/LB idle drops) instead of hanging until the deadline.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    return sock


def get_session(limits: Limits = DEFAULT_LIMITS) -> aiohttp.ClientSession:
    """The pooled session of the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(
            limit=limits.total,
            limit_per_host=limits.per_host,
            keepalive_timeout=limits.keepalive_s,
            socket_factory=_keepalive_socket,
            ttl_dns_cache=60,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # cookies travel per call; a shared jar would mix rollouts
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
            auto_decompress=True,
        )
        _sessions[loop] = session
    return session


async def close_sessions() -> None:
    """Close the session of the running loop (call at shutdown)."""
    loop = asyncio.get_running_loop()
    session = _sessions.pop(loop, None)
    if session is not None and not session.closed:
        await session.close()


# ------------------------------------------------------------------------------------------- sending
def _encode(json: Any) -> bytes:
    if hasattr(json, "model_dump"):
        json = json.model_dump(mode="json", exclude_unset=True)
    return orjson.dumps(json, option=orjson.OPT_SERIALIZE_NUMPY) if json is not None else b""


def _retry_after(headers: Mapping[str, str], policy: RetryPolicy) -> float | None:
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        seconds = parsed.timestamp() - time.time()
    return max(0.0, min(seconds, policy.retry_after_max_s))


async def send(
    method: str,
    url: str,
    *,
    json: Any = None,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    cookies: Mapping[str, str] | None = None,
    timeout: Timeouts | float | None = None,
    retry: RetryPolicy | None = None,
    server_name: str | None = None,
    ssl: Any = None,
) -> Response:
    """Send one request with deadlines and bounded retries; return the fully read response.

    Raises:
        UpstreamConnectError: the connection could not be opened on any attempt.
        UpstreamDisconnectedError: the peer closed the connection on every attempt.
        UpstreamTimeoutError: the connect or total deadline passed.
    Error statuses are returned (after retrying 429/502/503/504); call ``raise_for_status()`` to raise.
    """
    if isinstance(timeout, (int, float)):
        timeout = Timeouts(total=float(timeout))
    timeouts = timeout or DEFAULT_TIMEOUTS
    policy = retry or DEFAULT_RETRY
    body = data if data is not None else (_encode(json) if json is not None else None)
    req_headers = {"Content-Type": "application/json"} if json is not None else {}
    if headers:
        req_headers.update(headers)
    client_timeout = aiohttp.ClientTimeout(
        total=timeouts.total, connect=timeouts.connect, sock_connect=timeouts.connect
    )
    who = f"server '{server_name}'" if server_name else "upstream"
    session = get_session()
    attempt = 0
    while True:
        attempt += 1
        delay: float | None = None
        try:
            async with session.request(
                method,
                url,
                data=body,
                headers=req_headers,
                cookies=cookies,
                timeout=client_timeout,
                ssl=ssl,
            ) as resp:
                content = await resp.read()
                response = Response(
                    resp.status,
                    resp.headers,
                    {k: m.value for k, m in resp.cookies.items()},
                    content,
                    url,
                    server_name,
                )
            if response.status not in policy.retry_statuses or attempt >= policy.max_attempts:
                return response
            delay = _retry_after(response.headers, policy) or policy.backoff(attempt)
            logger.warning(
                "%s answered HTTP %s for %s %s; retry %d/%d in %.2fs",
                who, response.status, method, url, attempt, policy.max_attempts - 1, delay,
            )
        except (aiohttp.ClientConnectorError, aiohttp.ClientConnectionResetError) as exc:
            if attempt >= policy.max_attempts:
                raise UpstreamConnectError(
                    f"Could not connect to {who} at {url} after {attempt} attempt(s): {exc}. "
                    "Check that the server is running and reachable from this host.",
                    server_name=server_name,
                    url=url,
                ) from exc
            delay = policy.backoff(attempt)
            logger.warning("cannot connect to %s at %s (%s); retry %d in %.2fs", who, url, exc, attempt, delay)
        except aiohttp.ServerDisconnectedError as exc:
            if attempt >= policy.max_attempts:
                raise UpstreamDisconnectedError(
                    f"{who} at {url} closed the connection before answering ({attempt} attempt(s)).",
                    server_name=server_name,
                    url=url,
                ) from exc
            delay = policy.backoff(attempt)
            logger.warning("%s at %s disconnected; retry %d in %.2fs", who, url, attempt, delay)
        except (asyncio.TimeoutError, aiohttp.ConnectionTimeoutError, aiohttp.SocketTimeoutError) as exc:
            if isinstance(exc, aiohttp.ConnectionTimeoutError) and attempt < policy.max_attempts:
                delay = policy.backoff(attempt)
                logger.warning("connect to %s at %s timed out; retry %d in %.2fs", who, url, attempt, delay)
            else:
                raise UpstreamTimeoutError(
                    f"{who} at {url} did not answer within the deadline "
                    f"(connect {timeouts.connect}s, total {timeouts.total}s).",
                    server_name=server_name,
                    url=url,
                ) from exc
        except aiohttp.ClientOSError as exc:
            if attempt >= policy.max_attempts:
                raise UpstreamConnectError(
                    f"Network error talking to {who} at {url}: {exc}", server_name=server_name, url=url
                ) from exc
            delay = policy.backoff(attempt)
            logger.warning("network error with %s at %s (%s); retry %d in %.2fs", who, url, exc, attempt, delay)
        await asyncio.sleep(delay)
