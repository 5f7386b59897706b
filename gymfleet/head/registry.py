"""The head's live registry: server instances held by leases (soft state).

Servers announce themselves (register), renew their lease (heartbeat) and leave (deregister). An instance that misses
its lease is marked ``unhealthy`` and, after ``evict_after_s`` more, removed. Nothing here is durable: when the head
restarts, every live server re-registers on its next heartbeat (the head answers "unknown instance" and the server's
registrar registers again), so the registry reconverges without an operator.

Pure logic: no HTTP, no asyncio. Time comes from an injectable monotonic clock.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["InstanceInfo", "RegisteredInstance", "Registry"]

Status = Literal["healthy", "unhealthy"]


class InstanceInfo(BaseModel):
    """What a server tells the head about itself when it registers."""

    model_config = ConfigDict(extra="forbid")

    instance_id: str | None = Field(
        default=None, description="Stable id of this process; the head assigns one if absent"
    )
    name: str = Field(description="Top-level instance name (what clients pass as server_name)", min_length=1)
    server_type: Literal["resources_servers", "responses_api_agents", "responses_api_models"]
    impl: str = Field(min_length=1)
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    url: str
    pid: int | None = None
    node: str | None = Field(default=None, description="Hostname of the machine the server runs on")
    entrypoint: str | None = None
    dir_path: str | None = None
    start_time: float | None = None
    block: dict[str, Any] = Field(default_factory=dict, description="The server's config block (secrets redacted)")


@dataclass
class RegisteredInstance:
    info: InstanceInfo
    instance_id: str
    registered_at: float  # wall clock
    last_heartbeat: float  # monotonic
    status: Status = "healthy"
    heartbeats: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def display(self, *, now_wall: float, heartbeat_age_s: float) -> dict[str, Any]:
        """The NeMo Gym ``/server_instances`` element (13 fields, in its key order) plus gymfleet extras."""
        info = self.info
        start = info.start_time or self.registered_at
        return {
            "config_path": info.name,
            "dir_path": info.dir_path,
            "entrypoint": info.entrypoint,
            "host": info.host,
            "name": info.impl,
            "pid": info.pid,
            "port": info.port,
            "process_name": info.name,
            "server_type": info.server_type,
            "start_time": start,
            "status": self.status,
            "uptime_seconds": round(max(0.0, now_wall - start), 3),
            "url": info.url,
            "instance_id": self.instance_id,
            "node": info.node,
            "last_heartbeat_age_seconds": round(heartbeat_age_s, 3),
        }


class Registry:
    """Instances by id, with leases. ``version`` changes whenever the set of routable instances changes."""

    def __init__(
        self,
        *,
        lease_s: float = 10.0,
        evict_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if lease_s <= 0 or evict_after_s < 0:
            raise ValueError("lease_s must be > 0 and evict_after_s >= 0")
        self.lease_s = lease_s
        self.evict_after_s = evict_after_s
        self._clock = clock
        self._wall = wall_clock
        self._instances: dict[str, RegisteredInstance] = {}
        self._by_name: dict[str, dict[str, RegisteredInstance]] = {}  # name -> id -> entry (O(1) resolution)
        self.version = 0

    # -------------------------------------------------------------------------------- mutations
    def register(self, info: InstanceInfo) -> RegisteredInstance:
        """Add or refresh an instance. Re-registering the same id (after a head restart, or a second call) is
        idempotent."""
        instance_id = info.instance_id or uuid.uuid4().hex
        now = self._clock()
        existing = self._instances.get(instance_id)
        if existing is not None:
            changed = existing.info.url != info.url or existing.status != "healthy"
            existing.info = info.model_copy(update={"instance_id": instance_id})
            existing.last_heartbeat = now
            existing.status = "healthy"
            if changed:
                self.version += 1
            return existing
        # A new process at the address of an old one replaces it (a restarted server keeps its port).
        for old_id, old in list(self._by_name.get(info.name, {}).items()):
            if old.info.url == info.url:
                self._remove(old_id)
        entry = RegisteredInstance(
            info=info.model_copy(update={"instance_id": instance_id}),
            instance_id=instance_id,
            registered_at=self._wall(),
            last_heartbeat=now,
        )
        self._instances[instance_id] = entry
        self._by_name.setdefault(info.name, {})[instance_id] = entry
        self.version += 1
        return entry

    def _remove(self, instance_id: str) -> RegisteredInstance | None:
        entry = self._instances.pop(instance_id, None)
        if entry is not None:
            group = self._by_name.get(entry.info.name, {})
            group.pop(instance_id, None)
            if not group:
                self._by_name.pop(entry.info.name, None)
        return entry

    def heartbeat(self, instance_id: str) -> bool:
        """Renew a lease. False means "unknown instance": the caller must register again."""
        entry = self._instances.get(instance_id)
        if entry is None:
            return False
        entry.last_heartbeat = self._clock()
        entry.heartbeats += 1
        if entry.status != "healthy":
            entry.status = "healthy"
            self.version += 1
        return True

    def deregister(self, instance_id: str) -> bool:
        if self._remove(instance_id) is None:
            return False
        self.version += 1
        return True

    def sweep(self) -> tuple[list[str], list[str]]:
        """Mark instances whose lease expired unhealthy; evict those unhealthy for too long.

        Returns (ids marked unhealthy now, ids evicted now).
        """
        now = self._clock()
        marked: list[str] = []
        evicted: list[str] = []
        for instance_id, entry in list(self._instances.items()):
            age = now - entry.last_heartbeat
            if age > self.lease_s + self.evict_after_s:
                self._remove(instance_id)
                evicted.append(instance_id)
            elif age > self.lease_s and entry.status == "healthy":
                entry.status = "unhealthy"
                marked.append(instance_id)
        if marked or evicted:
            self.version += 1
        return marked, evicted

    # -------------------------------------------------------------------------------- queries
    def get(self, instance_id: str) -> RegisteredInstance | None:
        return self._instances.get(instance_id)

    def instances(self) -> list[RegisteredInstance]:
        return sorted(self._instances.values(), key=lambda e: (e.info.name, e.registered_at))

    def by_name(self, name: str, *, healthy_only: bool = True) -> list[RegisteredInstance]:
        group = self._by_name.get(name)
        if not group:
            return []
        entries = sorted(group.values(), key=lambda e: e.registered_at)
        return [e for e in entries if e.status == "healthy" or not healthy_only]

    def names(self) -> set[str]:
        return set(self._by_name)

    def heartbeat_age(self, entry: RegisteredInstance) -> float:
        return max(0.0, self._clock() - entry.last_heartbeat)

    def display(self, entries: Iterable[RegisteredInstance] | None = None) -> list[dict[str, Any]]:
        now_wall = self._wall()
        return [
            e.display(now_wall=now_wall, heartbeat_age_s=self.heartbeat_age(e))
            for e in (self.instances() if entries is None else entries)
        ]

    def __len__(self) -> int:
        return len(self._instances)
