"""HTTP transport: one pooled aiohttp session per event loop, deadlines, bounded retries.

Everything gymfleet sends over HTTP (server to server, server to upstream model, collector to agent) goes through
:func:`send`. It never waits without a deadline and never retries without a bound:

* connect timeout (default 10 s) and total timeout (default 900 s) on every request;
* connection errors (refused, reset, unreachable, connect timeout) and a peer that closed the connection are retried,
  as are 429/502/503/504 answers, with capped exponential backoff and full jitter; ``Retry-After`` is honoured (never
  sooner, plus jitter); a gymfleet server's typed error answer (``x-gymfleet-error``) is final and not retried;
* after the last attempt the failure is raised as a typed :mod:`gymfleet.errors` exception naming the server, the URL
  and the cause.
"""

from __future__ import annotations

import asyncio
import email.utils
import http.cookies
import json as _stdjson
import logging
import os
import random
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from gymfleet import metrics as _metrics
from gymfleet.errors import (
    UpstreamConnectError,
    UpstreamDisconnectedError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)

__all__ = [
    "FINAL_ERROR_HEADER",
    "Limits",
    "Response",
    "RetryPolicy",
    "Timeouts",
    "close_sessions",
    "configure_fleet_defaults",
    "get_session",
    "send",
]

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

    def wait_after(self, retry_after_s: float | None, attempt: int) -> float:
        """Sleep before retry ``attempt`` when the server said ``Retry-After``: never sooner than asked (nor than the
        backoff), spread over up to 25% more, so callers told the same value do not return in lockstep."""
        backoff = self.backoff(attempt)
        if not retry_after_s:
            return backoff
        return max(retry_after_s, backoff) * random.uniform(1.0, 1.25)


@dataclass(frozen=True)
class Limits:
    """Connection pool sizing. 10k in-flight requests per process fit the default."""

    total: int = 16384
    per_host: int = 0  # 0 = only the total bounds it
    keepalive_s: float = 15.0  # below the servers' 30 s idle timeout, so a pooled socket is never stale


NO_RETRY = RetryPolicy(max_attempts=1)
# Set by gymfleet servers on their typed error answers. Such an answer is final: the server has already retried its
# own upstream within bounds, so retrying it here would multiply the attempts hop by hop (agent x model x upstream).
FINAL_ERROR_HEADER = "x-gymfleet-error"
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


def _env_seconds(name: str, default: int) -> int:
    try:
        return max(1, int(float(os.environ.get(name, default))))
    except ValueError:
        logger.warning("ignoring %s=%r: not a number of seconds", name, os.environ.get(name))
        return default


# Dead-peer detection on every socket (env overrides, read once per process). Keepalive probes find a silently
# dropped idle connection (NAT/LB idle drops); TCP_USER_TIMEOUT bounds how long sent bytes may stay unacknowledged
# (a path that went dark mid-request, or a pooled connection reused after the peer vanished): without it Linux
# retransmits for ~15 minutes before giving up, and the request hangs until its total deadline.
TCP_KEEPIDLE_S = _env_seconds("GYMFLEET_TCP_KEEPIDLE_S", 60)
TCP_KEEPINTVL_S = _env_seconds("GYMFLEET_TCP_KEEPINTVL_S", 10)
TCP_KEEPCNT = _env_seconds("GYMFLEET_TCP_KEEPCNT", 3)
TCP_USER_TIMEOUT_S = _env_seconds("GYMFLEET_TCP_USER_TIMEOUT_S", 30)


def _keepalive_socket(addr_info: Any) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    # Detect silently dropped connections (NAT/LB idle drops) instead of hanging until the deadline.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", TCP_KEEPIDLE_S), ("TCP_KEEPINTVL", TCP_KEEPINTVL_S),
                        ("TCP_KEEPCNT", TCP_KEEPCNT), ("TCP_USER_TIMEOUT", TCP_USER_TIMEOUT_S * 1000)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    return sock


async def _on_queued_start(_: Any, ctx: Any, __: Any) -> None:
    ctx.queued_at = time.perf_counter()


async def _on_queued_end(_: Any, ctx: Any, __: Any) -> None:
    started = getattr(ctx, "queued_at", None)
    if started is not None:
        target = (ctx.trace_request_ctx or {}).get("target") if isinstance(ctx.trace_request_ctx, dict) else None
        _metrics.observe_pool_wait(target, time.perf_counter() - started)


def _pool_trace() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_connection_queued_start.append(_on_queued_start)
    trace.on_connection_queued_end.append(_on_queued_end)
    return trace


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
            trace_configs=[_pool_trace()],  # gymfleet_upstream_pool_wait_seconds: pool waits are not backend latency
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
    if json is None:
        return b""
    try:
        return orjson.dumps(json, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # e.g. an integer past 64 bits passed along from a request: the stdlib writes it
        return _stdjson.dumps(json, default=str).encode()


_COOKIE_SAFE = re.compile(r"^[!#-+\--:<-\[\]-~]*$")  # RFC 6265 cookie-octets: sent as they are


def _cookie_value(value: str) -> str:
    value = str(value)
    if _COOKIE_SAFE.match(value):
        return value
    return http.cookies.SimpleCookie().value_encode(value)[1]  # quoted the way a cookie jar would


def _response_cookies(resp: aiohttp.ClientResponse) -> dict[str, str]:
    if "Set-Cookie" not in resp.headers:  # the common case: nothing to parse
        return {}
    return {k: m.value for k, m in resp.cookies.items()}


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


@dataclass
class _FleetDefaults:
    headers: dict[str, str] = field(default_factory=dict)
    ssl: Any = None


_fleet = _FleetDefaults()


def configure_fleet_defaults(*, headers: Mapping[str, str] | None = None, ssl: Any = None) -> None:
    """Process-wide defaults (see :mod:`gymfleet.security`): ``headers`` go on every fleet hop (a call that names a
    ``server_name``; explicit headers win); ``ssl`` is the context used for every call that passes none."""
    _fleet.headers = dict(headers or {})
    _fleet.ssl = ssl


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

    ``server_name`` marks a call to a fleet server: it is labelled with that name in errors and metrics and carries
    the fleet token (when one is configured). Calls without it (outside upstreams) never carry the token.

    Raises:
        UpstreamConnectError: the connection could not be opened on any attempt.
        UpstreamDisconnectedError: the peer closed the connection on every attempt.
        UpstreamTimeoutError: the connect or total deadline passed.
    Error statuses are returned (after retrying 429/502/503/504); call ``raise_for_status()`` to raise.
    """
    if server_name is not None and _fleet.headers:
        headers = {**_fleet.headers, **(headers or {})}
    started = time.perf_counter()
    status: int | None = None
    try:
        response = await _send(method, url, json=json, data=data, headers=headers, cookies=cookies,
                               timeout=timeout, retry=retry, server_name=server_name,
                               ssl=ssl if ssl is not None else _fleet.ssl)
        status = response.status
        return response
    finally:
        _metrics.observe_upstream(server_name, time.perf_counter() - started, status)


async def _send(
    method: str,
    url: str,
    *,
    json: Any,
    data: bytes | None,
    headers: Mapping[str, str] | None,
    cookies: Mapping[str, str] | None,
    timeout: Timeouts | float | None,
    retry: RetryPolicy | None,
    server_name: str | None,
    ssl: Any,
) -> Response:
    if isinstance(timeout, (int, float)):
        timeout = Timeouts(total=float(timeout))
    timeouts = timeout or DEFAULT_TIMEOUTS
    policy = retry or DEFAULT_RETRY
    body = data if data is not None else (_encode(json) if json is not None else None)
    req_headers = {"Content-Type": "application/json"} if json is not None else {}
    if headers:
        req_headers.update(headers)
    if cookies:  # one Cookie header written here: aiohttp's per-request cookie jar costs ~15% of a hop
        line = "; ".join(f"{k}={_cookie_value(v)}" for k, v in cookies.items())
        existing = req_headers.get("Cookie") or req_headers.get("cookie")
        req_headers["Cookie"] = f"{existing}; {line}" if existing else line
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
                timeout=client_timeout,
                ssl=ssl,
                trace_request_ctx={"target": server_name},
            ) as resp:
                content = await resp.read()
                response = Response(
                    resp.status,
                    resp.headers,
                    _response_cookies(resp),
                    content,
                    url,
                    server_name,
                )
            if (
                response.status not in policy.retry_statuses
                or attempt >= policy.max_attempts
                or FINAL_ERROR_HEADER in response.headers  # a gymfleet peer already retried its own upstream
            ):
                return response
            delay = policy.wait_after(_retry_after(response.headers, policy), attempt)
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
        _metrics.count_retry(server_name)
        await asyncio.sleep(delay)
