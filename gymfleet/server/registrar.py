"""A server's side of the registry: register with the head, heartbeat, re-register, deregister.

* Startup: register, retrying with capped backoff for at most ``connect_timeout_s``; then give up with an error that
  says "Could not connect to head server at <url>" (a worker pointed at a wrong or firewalled head fails loudly).
* Running: heartbeat every ``heartbeat_interval_s`` (the head says how often). A head that answers "unknown instance"
  (it restarted) gets a fresh registration at once; a head that is down is retried on every beat, logged on the
  first failure and on recovery, never fatal: the server keeps serving, and re-registers when the head is back.
* Shutdown: deregister (short deadline, best effort) before the server stops accepting requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from gymfleet import transport
from gymfleet.errors import ClientError, HeadUnreachableError

__all__ = ["Registrar"]

logger = logging.getLogger("gymfleet.registrar")

_BEAT_TIMEOUT = transport.Timeouts(connect=3.0, total=5.0)
_NO_RETRY = transport.RetryPolicy(max_attempts=1)


class Registrar:
    """Keeps one server instance registered with one head."""

    def __init__(
        self,
        head_url: str,
        info: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        connect_timeout_s: float = 60.0,
        heartbeat_interval_s: float | None = None,
    ) -> None:
        self.head_url = head_url.rstrip("/")
        self.info = dict(info)
        self.headers = dict(headers or {})
        self.connect_timeout_s = connect_timeout_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.instance_id: str | None = self.info.get("instance_id")
        self.registrations = 0
        self._task: asyncio.Task[None] | None = None
        self._head_down_since: float | None = None

    async def _post(self, path: str, body: Mapping[str, Any]) -> transport.Response:
        return await transport.send(
            "POST",
            f"{self.head_url}{path}",
            json=body,
            headers=self.headers or None,
            timeout=_BEAT_TIMEOUT,
            retry=_NO_RETRY,
            server_name="head_server",
        )

    async def register_once(self) -> None:
        resp = await self._post("/registry/register", self.info)
        resp.raise_for_status()
        data = resp.json()
        self.instance_id = data["instance_id"]
        self.info["instance_id"] = self.instance_id
        if self.heartbeat_interval_s is None:
            self.heartbeat_interval_s = float(data.get("heartbeat_interval_s", 3.0))
        self.registrations += 1

    async def start(self) -> None:
        """Register (bounded wait for the head), then heartbeat in the background."""
        deadline = time.monotonic() + self.connect_timeout_s
        delay = 0.05
        last_error: Exception | None = None
        while True:
            try:
                await self.register_once()
                break
            except ClientError as exc:
                last_error = exc
            if time.monotonic() + delay > deadline:
                raise HeadUnreachableError(
                    f"Could not connect to head server at {self.head_url} (tried for {self.connect_timeout_s:.0f}s): "
                    f"{last_error}. Start the head first (`ng_run` / `gymfleet run` on the coordinator), check "
                    "head_server.host / head_server.port in this node's config, and that the port is open.",
                    server_name="head_server",
                    url=self.head_url,
                ) from last_error
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        logger.info("registered '%s' at %s with head %s", self.info.get("name"), self.info.get("url"), self.head_url)
        self._task = asyncio.create_task(self._beat_forever(), name="gymfleet-heartbeat")

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s or 3.0)
            try:
                resp = await self._post("/registry/heartbeat", {"instance_id": self.instance_id})
                if resp.status == 404:
                    logger.warning("head %s does not know this server (it restarted?); registering again",
                                   self.head_url)
                    await self.register_once()
                else:
                    resp.raise_for_status()
                if self._head_down_since is not None:
                    logger.warning("head %s is reachable again after %.1fs", self.head_url,
                                   time.monotonic() - self._head_down_since)
                    self._head_down_since = None
            except ClientError as exc:
                if self._head_down_since is None:
                    self._head_down_since = time.monotonic()
                    logger.warning("heartbeat to head %s failed: %s (will keep trying)", self.head_url, exc)

    async def stop(self, *, timeout_s: float = 2.0) -> None:
        """Stop heartbeating and deregister (best effort within ``timeout_s``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.instance_id is None:
            return
        try:
            await asyncio.wait_for(self._post("/registry/deregister", {"instance_id": self.instance_id}), timeout_s)
        except (ClientError, asyncio.TimeoutError) as exc:
            logger.info("could not deregister from head %s: %s", self.head_url, exc)
