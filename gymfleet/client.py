"""Name-based routing: ``await server_client.post(server_name="example_resources", url_path="/verify", json=...)``.

A :class:`ServerClient` turns a server *name* into a live instance and sends the request through
:mod:`gymfleet.transport` (deadlines, bounded retries, typed errors). Resolution order:

1. the local config (the instance block's ``host``/``port``), when the name is there;
2. the head's live registry (``GET /registry/instances?name=...``), cached briefly and refreshed when a call to a
   known instance fails to connect. Names that only another node defines (late binding) resolve here; a name that
   never appears is waited for up to ``late_binding_timeout_s`` and then raises :class:`ServerNotFoundError` with
   close names suggested.

Several live instances of one name are balanced by fewest requests in flight (ties taken in turn); a request
that carries a session cookie of that server goes back to the instance that created the session (the cookie
names it).

Dead instances are routed around: an instance that refused a connection is avoided for ``quarantine_s`` (the
head may still list it until its lease runs out) while another one is available. The head being down or
restarting does not stop traffic: names already resolved keep their last known instances until it answers.
"""

from __future__ import annotations

import asyncio
import difflib
import json as _stdjson
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from gymfleet import security, transport
from gymfleet.errors import (
    HeadUnreachableError,
    ServerNotFoundError,
    UpstreamConnectError,
    UpstreamStatusError,
)

__all__ = ["Endpoint", "ServerClient", "ServerResponse"]

logger = logging.getLogger("gymfleet.client")

SERVER_TYPES = ("resources_servers", "responses_api_agents", "responses_api_models")


class ServerResponse:
    """The answer of a peer server, shaped like aiohttp's response (``await resp.json()``), fully read."""

    __slots__ = ("_r", "instance_id")

    def __init__(self, response: transport.Response, instance_id: str | None = None) -> None:
        self._r = response
        self.instance_id = instance_id

    status = property(lambda self: self._r.status)
    headers = property(lambda self: self._r.headers)
    cookies = property(lambda self: self._r.cookies)
    content = property(lambda self: self._r.content)
    url = property(lambda self: self._r.url)
    ok = property(lambda self: self._r.ok)
    server_name = property(lambda self: self._r.server_name)

    async def json(self) -> Any:
        return self._r.json()

    async def text(self) -> str:
        return self._r.text()

    async def read(self) -> bytes:
        return self._r.content

    def json_sync(self) -> Any:
        return self._r.json()

    def raise_for_status(self) -> None:
        self._r.raise_for_status()

    def __repr__(self) -> str:
        return f"<ServerResponse {self.status} {self.url}>"


@dataclass
class Endpoint:
    url: str
    server_type: str | None = None
    instance_id: str | None = None
    in_flight: int = 0


@dataclass
class _Entry:
    endpoints: list[Endpoint]
    fetched_at: float
    source: str  # "local" | "head"
    cursor: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _head_url(head: Mapping[str, Any] | None) -> str | None:
    if not head:
        return None
    host, port = head.get("host"), head.get("port")
    if not host or not port:
        return None
    scheme = "https" if head.get("tls") else security.fleet_scheme()
    return f"{scheme}://{_url_host(str(host))}:{int(port)}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _local_block(config: Mapping[str, Any], name: str) -> tuple[str, dict[str, Any]] | None:
    value = config.get(name)
    if not isinstance(value, Mapping):
        return None
    for server_type in SERVER_TYPES:
        typed = value.get(server_type)
        if isinstance(typed, Mapping) and typed:
            block = next(iter(typed.values()))
            if isinstance(block, Mapping):
                return server_type, dict(block)
    return None


class ServerClient:
    """Call fleet servers by name.

    Args:
        global_config: the fleet config as a plain mapping (or OmegaConf DictConfig); names found here route
            without asking the head.
        head_server_config: ``{"host": ..., "port": ...}`` of the head; defaults to ``global_config["head_server"]``.
        timeouts / retry: defaults for every call (overridable per call).
        late_binding_timeout_s: how long to wait for an unknown name to be registered by another node.
        cache_ttl_s: how long instances learned from the head are used before asking it again.
        quarantine_s: how long an instance that refused a connection is avoided while others are available.
    """

    def __init__(
        self,
        global_config: Mapping[str, Any] | None = None,
        *,
        head_server_config: Mapping[str, Any] | None = None,
        timeouts: transport.Timeouts | None = None,
        retry: transport.RetryPolicy | None = None,
        late_binding_timeout_s: float = 60.0,
        cache_ttl_s: float = 5.0,
        quarantine_s: float = 30.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        config = _plain(global_config) if global_config is not None else {}
        self.global_config: dict[str, Any] = config
        head = head_server_config if head_server_config is not None else config.get("head_server")
        self.head_server_config = dict(_plain(head)) if head else None
        self.head_url = _head_url(self.head_server_config)
        self.timeouts = timeouts or transport.Timeouts()
        self.retry = retry or transport.RetryPolicy()
        self.late_binding_timeout_s = late_binding_timeout_s
        self.cache_ttl_s = cache_ttl_s
        self.headers = dict(headers or {})
        self.quarantine_s = quarantine_s
        self._cache: dict[str, _Entry] = {}
        self._head_names: set[str] = set()
        self._dead: dict[str, float] = {}  # url -> monotonic time until which it is avoided
        self._head_down_logged: set[str] = set()

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def load_from_global_config(
        cls, head_server_config: Mapping[str, Any] | None = None, *, timeout_s: float = 10.0, **kwargs: Any
    ) -> ServerClient:
        """For processes outside the fleet (scripts, collectors): fetch the fleet config from the head.

        Raises:
            HeadUnreachableError: "Could not connect to head server at http://host:port ..." when it does not answer.
        """
        head = dict(head_server_config or {"host": "127.0.0.1", "port": 11000})
        url = _head_url(head)
        config = fetch_global_config(url or "http://127.0.0.1:11000", timeout_s=timeout_s)
        config["head_server"] = {**config.get("head_server", {}), **head}
        return cls(config, head_server_config=head, **kwargs)

    # ------------------------------------------------------------------------------ calls
    async def post(self, server_name: str, url_path: str, **kwargs: Any) -> ServerResponse:
        return await self.request("POST", server_name, url_path, **kwargs)

    async def get(self, server_name: str, url_path: str, **kwargs: Any) -> ServerResponse:
        return await self.request("GET", server_name, url_path, **kwargs)

    async def request(
        self,
        method: str,
        server_name: str,
        url_path: str,
        *,
        json: Any = None,
        cookies: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: transport.Timeouts | float | None = None,
        retry: transport.RetryPolicy | None = None,
    ) -> ServerResponse:
        """Send ``method url_path`` to a live instance of ``server_name``.

        Error statuses are returned, not raised (call ``raise_for_status()``); transport failures raise typed
        :mod:`gymfleet.errors` exceptions after bounded retries.
        """
        if not url_path.startswith("/"):
            url_path = "/" + url_path
        plain_cookies = _cookie_values(cookies)
        body = json.model_dump(mode="json", exclude_unset=True) if hasattr(json, "model_dump") else json
        req_headers = {**self.headers, **(headers or {})}
        for attempt in (1, 2):
            endpoint = await self._choose(server_name, plain_cookies)
            endpoint.in_flight += 1
            try:
                response = await transport.send(
                    method,
                    endpoint.url + url_path,
                    json=body,
                    headers=req_headers or None,
                    cookies=plain_cookies or None,
                    timeout=timeout or self.timeouts,
                    retry=retry or self.retry,
                    server_name=server_name,
                )
                return ServerResponse(response, endpoint.instance_id)
            except UpstreamConnectError:
                # The instance we knew is gone: re-resolve once (another replica, or its restart) before giving up.
                if attempt == 2 or not self._forget(server_name, endpoint):
                    raise
                _warn_unreachable(server_name, endpoint.url)
            finally:
                endpoint.in_flight -= 1
        raise AssertionError("unreachable")  # pragma: no cover - loop always returns or raises

    # ------------------------------------------------------------------------------ resolution
    def known_names(self) -> set[str]:
        names = {k for k in self.global_config if _local_block(self.global_config, k)}
        return names | self._head_names

    def server_type_of(self, server_name: str) -> str | None:
        local = _local_block(self.global_config, server_name)
        if local:
            return local[0]
        entry = self._cache.get(server_name)
        if entry and entry.endpoints:
            return entry.endpoints[0].server_type
        return None

    async def endpoints(self, server_name: str) -> list[Endpoint]:
        entry = self._cache.get(server_name)
        if entry is not None and (entry.source == "local" or time.monotonic() - entry.fetched_at < self.cache_ttl_s):
            if entry.endpoints:
                return entry.endpoints
        local = _local_block(self.global_config, server_name)
        if local is not None and entry is None:
            server_type, block = local
            host, port = block.get("host"), block.get("port")
            if host and port:
                if host in ("0.0.0.0", "::"):
                    host = "127.0.0.1"
                eps = [Endpoint(f"{security.fleet_scheme()}://{_url_host(str(host))}:{int(port)}", server_type)]
                self._cache[server_name] = _Entry(eps, time.monotonic(), "local")
                return eps
        return await self._resolve_from_head(server_name)

    async def _resolve_from_head(self, server_name: str) -> list[Endpoint]:
        deadline = time.monotonic() + self.late_binding_timeout_s
        delay = 0.1
        head_error: HeadUnreachableError | None = None
        while True:
            try:
                eps = await self._fetch_head(server_name)
                head_error = None
                self._head_down_logged.discard(server_name)
            except HeadUnreachableError as exc:
                stale = self._cache.get(server_name)
                if stale is not None and stale.endpoints:
                    # Soft state: the head restarts or is cut off; the instances we knew are the best guess.
                    if server_name not in self._head_down_logged:
                        self._head_down_logged.add(server_name)
                        logger.warning("head %s unreachable (%s); routing '%s' to its last known instances",
                                       self.head_url, exc, server_name)
                    stale.fetched_at = time.monotonic()
                    return stale.endpoints
                head_error, eps = exc, []
            if eps:
                return eps
            if self.head_url is None or time.monotonic() + delay > deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        if head_error is not None:
            raise head_error
        known = sorted(self.known_names())
        close = difflib.get_close_matches(server_name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        where = f"the local config or the head at {self.head_url}" if self.head_url else "the local config"
        raise ServerNotFoundError(
            f"No live server named '{server_name}' in {where} "
            f"(waited {self.late_binding_timeout_s:.0f}s).{hint} Known servers: {', '.join(known) or 'none'}. "
            "Check the name in your config, or start the node that defines it.",
            server_name=server_name,
            suggestions=close,
        )

    async def _fetch_head(self, server_name: str) -> list[Endpoint]:
        if self.head_url is None:
            return []
        try:
            resp = await transport.send(
                "GET",
                f"{self.head_url}/registry/instances?name={server_name}",
                headers=self.headers or None,
                timeout=transport.Timeouts(connect=5.0, total=10.0),
                retry=transport.RetryPolicy(max_attempts=2),
                server_name="head_server",
            )
            resp.raise_for_status()
        except (UpstreamConnectError, UpstreamStatusError) as exc:
            raise HeadUnreachableError(
                f"Could not connect to head server at {self.head_url} to resolve '{server_name}': {exc}",
                server_name="head_server",
                url=self.head_url,
            ) from exc
        data = resp.json()
        self._head_names = set(data.get("names", []))
        cached = self._cache.get(server_name)
        old = {ep.instance_id: ep for ep in (cached.endpoints if cached else [])}
        eps = []
        for item in data.get("instances", []):
            if item.get("status") != "healthy":
                continue
            ep = old.get(item["instance_id"]) or Endpoint(item["url"], item.get("server_type"), item["instance_id"])
            eps.append(ep)
        if not eps and cached is not None and cached.endpoints and cached.source == "head":
            # No healthy instance listed right now (a restarted head before re-registration, or missed
            # heartbeats): keep the instances we knew rather than failing calls; one really gone is dropped.
            cached.fetched_at = time.monotonic()
            return cached.endpoints
        cursor = cached.cursor if cached else 0
        self._cache[server_name] = _Entry(eps, time.monotonic(), "head", cursor=cursor)
        return eps

    def _forget(self, server_name: str, endpoint: Endpoint) -> bool:
        """Drop a dead endpoint; True if re-resolving may help (a head can tell us about another instance)."""
        now = time.monotonic()
        self._dead = {url: until for url, until in self._dead.items() if until > now}  # stays small
        self._dead[endpoint.url] = now + self.quarantine_s
        entry = self._cache.pop(server_name, None)
        if entry is not None and entry.source == "head":
            rest = [ep for ep in entry.endpoints if ep is not endpoint]
            if rest:
                self._cache[server_name] = _Entry(rest, entry.fetched_at, "head")
        elif entry is not None and entry.source == "local":
            # Keep using the local block only if no head can say better.
            self._cache[server_name] = _Entry([], 0.0, "head") if self.head_url else entry
        return self.head_url is not None

    async def _choose(self, server_name: str, cookies: Mapping[str, str]) -> Endpoint:
        eps = await self.endpoints(server_name)
        if len(eps) == 1:
            return eps[0]
        now = time.monotonic()
        live = [ep for ep in eps if self._dead.get(ep.url, 0.0) <= now] or eps  # all dead: try them anyway
        suffix = f"___{server_name}"
        for cookie_name, value in cookies.items():
            if cookie_name.endswith(suffix):
                sticky = _instance_from_cookie(value)
                for ep in live:
                    if ep.instance_id == sticky:
                        return ep
        fewest = min(ep.in_flight for ep in live)
        candidates = [ep for ep in live if ep.in_flight == fewest]
        entry = self._cache.get(server_name)
        turn = 0
        if entry is not None:  # take ties in turn, or sequential callers would all land on the first instance
            entry.cursor += 1
            turn = entry.cursor
        return candidates[turn % len(candidates)]


_last_unreachable_warning: dict[str, tuple[float, int]] = {}


def _warn_unreachable(server_name: str, url: str, every_s: float = 5.0) -> None:
    """Log an unreachable instance at most once per ``every_s`` per URL (with the count), never a flood."""
    now = time.monotonic()
    last, suppressed = _last_unreachable_warning.get(url, (0.0, 0))
    if now - last < every_s:
        _last_unreachable_warning[url] = (last, suppressed + 1)
        return
    more = f" ({suppressed} more since the last report)" if suppressed else ""
    logger.warning("server '%s' at %s unreachable; re-resolving%s", server_name, url, more)
    _last_unreachable_warning[url] = (now, 0)


def _instance_from_cookie(value: str) -> str | None:
    parts = value.split(".")
    return parts[1] if len(parts) == 3 else None


def _cookie_values(cookies: Mapping[str, Any] | None) -> dict[str, str]:
    if not cookies:
        return {}
    out = {}
    for key, value in cookies.items():
        out[key] = value.value if hasattr(value, "value") else str(value)  # SimpleCookie morsels too
    return out


def _plain(config: Any) -> Any:
    if hasattr(config, "_metadata") and hasattr(config, "items"):  # OmegaConf container
        from omegaconf import OmegaConf

        return OmegaConf.to_container(config, resolve=False)
    return dict(config) if isinstance(config, Mapping) else config


def fetch_global_config(head_url: str, *, timeout_s: float = 10.0, token: str | None = None) -> dict[str, Any]:
    """GET ``/global_config_dict_yaml`` (sync). Accepts NeMo Gym's JSON-string body and raw YAML alike."""
    request = urllib.request.Request(f"{head_url}/global_config_dict_yaml")
    token = token if token is not None else security.current_settings().token
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(  # noqa: S310 - URL built from config
            request, timeout=timeout_s, context=security.client_ssl()
        ) as resp:
            raw = resp.read()
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise HeadUnreachableError(
            f"Could not connect to head server at {head_url}: {getattr(exc, 'reason', exc)}. "
            "Is the head server running (start it with `ng_run` / `gymfleet run`)? Check head_server.host / "
            "head_server.port and that the port is open from this machine.",
            server_name="head_server",
            url=head_url,
        ) from exc
    text = raw.decode("utf-8")
    try:
        decoded = _stdjson.loads(text)
        if isinstance(decoded, str):
            text = decoded
    except ValueError:
        pass
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise HeadUnreachableError(
            f"The head server at {head_url} answered /global_config_dict_yaml with something that is not a config "
            "mapping; is that port really a gymfleet / NeMo Gym head?",
            server_name="head_server",
            url=head_url,
        )
    return data
