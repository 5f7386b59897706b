"""The Ray actor that runs one node's :class:`~gymfleet.launcher.Fleet` inside a trainer's cluster.

The class is plain Python; :func:`fleet_actor_class` wraps it with ``ray.remote`` when first needed, so
importing this module never imports Ray. It is an async actor: ``Fleet`` runs on the actor's event loop,
and the servers it spawns are its child processes (they stop with it: the launcher hands each its parent
pid, and the actor's ``stop`` stops them explicitly first).
"""

from __future__ import annotations

import logging
import os
from typing import Any

__all__ = ["FleetActor", "fleet_actor_class"]

logger = logging.getLogger("gymfleet.training")


class FleetActor:
    """One node's fleet: ``start`` it with a mode (``head`` or ``worker``), ``stop`` it, ask for its pids."""

    def __init__(self) -> None:
        self._fleet: Any = None

    async def node_ip(self) -> str:
        import ray

        return str(ray.util.get_node_ip_address())

    async def start(self, config: dict[str, Any], mode: str, options: dict[str, Any]) -> dict[str, Any]:
        """Start the fleet; return its head URL, servers, pid and node IP once every server answers."""
        import ray

        from gymfleet.launcher import Fleet, LaunchOptions

        if self._fleet is not None:
            raise RuntimeError("this fleet actor already runs a fleet; create a new actor for another")
        fleet = Fleet(config, LaunchOptions(mode=mode, **options))  # type: ignore[arg-type]
        await fleet.start()  # stops what it started, then raises, when a server fails to come up
        self._fleet = fleet
        return {
            "head_url": fleet.head_url,
            "head_server": dict(fleet.config["head_server"]),
            "servers": [dict(line) for line in fleet.summary()],
            "pid": os.getpid(),
            "node_ip": str(ray.util.get_node_ip_address()),
            "mode": fleet.mode,
        }

    async def pids(self) -> list[int]:
        """This actor's pid and those of its servers (for checks that nothing is left behind)."""
        pids = [os.getpid()]
        if self._fleet is not None:
            pids += [int(line["pid"]) for line in self._fleet.summary() if line.get("pid")]
        return pids

    async def stop(self) -> None:
        fleet, self._fleet = self._fleet, None
        if fleet is not None:
            await fleet.stop()
            logger.info("fleet actor %d stopped its servers", os.getpid())


def fleet_actor_class(ray: Any) -> Any:
    """``ray.remote(FleetActor)``; the caller sets resources and placement with ``.options(...)``."""
    return ray.remote(FleetActor)
