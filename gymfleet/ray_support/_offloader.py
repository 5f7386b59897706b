"""One object for an environment's CPU-heavy calls: Ray when the fleet has a cluster, a local pool otherwise.

An environment creates one :class:`Offloader` from its config block's ``ray`` key and calls
``await offloader.run_traced(fn, *args, timeout=...)``; the backend is chosen once, on first use:

* ``ray: true`` -- Ray is required: the launcher starts a local cluster when none is configured; a server
  without Ray installed, or that cannot join, fails (typed error, install command in the message);
* ``ray: auto`` (default) -- Ray when ``ray_head_node_address`` is set and Ray is installed, else local;
* ``ray: false`` -- always the local pool.

At most ``max_in_flight`` calls are outstanding per server (the rest wait before their timeout starts), so a
burst of requests does not queue thousands of tasks whose timeouts run out in the queue. On Ray the default is
what the cluster runs at once (its CPUs / ``num_cpus``, read at start); several servers sharing one cluster
still compete in Ray's queue, where waiting counts against the timeout.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any, TypeVar

from gymfleet.ray_support._cluster import ray_mode
from gymfleet.ray_support._connect import connect, current_settings
from gymfleet.ray_support._errors import RayConnectError
from gymfleet.ray_support._local_pool import LocalPool
from gymfleet.ray_support._offload import OffloadResult, run_traced, ship_module

__all__ = ["Offloader", "setup_server_process"]

logger = logging.getLogger("gymfleet.ray")

T = TypeVar("T")


class Offloader:
    """Run calls on Ray or in a :class:`LocalPool`, chosen by ``mode`` (``auto`` / ``required`` / ``off``).

    Args:
        mode: ``ray_mode(block)`` of the server's config block, or one of the three words.
        local_workers: Size of the local pool (when Ray is not used).
        max_in_flight: Outstanding calls per server (default: ``local_workers`` locally; on Ray, the
            cluster's CPUs / ``num_cpus``).
        num_cpus: CPUs each Ray task reserves.
        preload: Modules the local workers import at start.
        ship_modules: Modules sent to Ray by value (the environment's own helper modules).
        memory_limit_bytes: Local workers' address-space limit.
        local_pool: Start a :class:`LocalPool` when Ray is not used (False: the caller runs local work itself,
            e.g. as an asyncio subprocess, and only asks :meth:`start` which backend to use).
        warmup: A picklable function run once per worker before real work (each local worker; on Ray, one
            task per CPU at start), so first-call costs do not count against the calls' timeouts.
    """

    def __init__(
        self,
        mode: str = "auto",
        *,
        local_workers: int = 2,
        max_in_flight: int | None = None,
        num_cpus: float = 1.0,
        preload: Sequence[str] = (),
        ship_modules: Sequence[ModuleType | str] = (),
        memory_limit_bytes: int | None = None,
        local_pool: bool = True,
        warmup: Callable[[], Any] | None = None,
    ) -> None:
        if mode not in ("auto", "required", "off"):
            mode = ray_mode({"ray": mode})
        self.mode = mode
        self.local_workers = local_workers
        self.max_in_flight = max_in_flight
        self.num_cpus = num_cpus
        self.preload = list(preload)
        self.ship_modules = list(ship_modules)
        self.memory_limit_bytes = memory_limit_bytes
        self.local_pool = local_pool
        self.warmup = warmup
        self.backend: str | None = None  # "ray" | "local", once started
        self.pool: LocalPool | None = None
        self._slots: asyncio.Semaphore | None = None
        self._lock: asyncio.Lock | None = None

    def _wants_ray(self) -> bool:
        if self.mode == "off":
            return False
        if self.mode == "required":
            return True
        if current_settings().address is None:
            return False
        if importlib.util.find_spec("ray") is None:
            logger.warning(
                "ray_head_node_address is set but Ray is not installed: verifying locally "
                "(pip install 'gymfleet[ray]' to use the cluster)"
            )
            return False
        return True

    async def start(self) -> str:
        """Pick and start the backend (idempotent); return ``ray`` or ``local``."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.backend is not None:
                return self.backend
            if self._wants_ray():
                await connect()
                for module in self.ship_modules:
                    ship_module(module)
                # As many in flight as the cluster runs at once: the rest wait here, before their timeout
                # starts, rather than in Ray's queue, where waiting would count against it.
                slots = max(1, int(_cluster_cpus() / max(self.num_cpus, 0.01)))
                limit = self.max_in_flight or slots
                if self.warmup is not None:
                    await self._warm_ray(slots)
                self.backend = "ray"
            else:
                if self.local_pool:
                    self.pool = LocalPool(
                        self.local_workers,
                        preload=self.preload,
                        warmup=self.warmup,
                        memory_limit_bytes=self.memory_limit_bytes,
                    )
                    await self.pool.start()
                limit = self.max_in_flight or self.local_workers
                self.backend = "local"
            self._slots = asyncio.Semaphore(limit)
            logger.info("offloading on %s (at most %d calls in flight)", self.backend, limit)
            return self.backend

    async def _warm_ray(self, slots: int) -> None:
        assert self.warmup is not None
        results = await asyncio.gather(
            *(run_traced(self.warmup, timeout=120.0, num_cpus=self.num_cpus) for _ in range(slots)),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            logger.warning("warm-up of %d of %d Ray workers failed: %s", len(failed), slots, failed[0])

    async def run_traced(
        self, fn: Callable[..., T], *args: Any, timeout: float, kwargs: Mapping[str, Any] | None = None
    ) -> OffloadResult[T]:
        """Run ``fn(*args)`` on the chosen backend; same errors as :func:`gymfleet.ray_support.run`."""
        await self.start()
        assert self._slots is not None
        async with self._slots:
            if self.backend == "ray":
                return await run_traced(fn, *args, timeout=timeout, num_cpus=self.num_cpus, kwargs=kwargs)
            if self.pool is None:
                raise RuntimeError("this Offloader was made with local_pool=False: run local work yourself")
            return await self.pool.run_traced(fn, *args, timeout=timeout, kwargs=kwargs)

    async def run(
        self, fn: Callable[..., T], *args: Any, timeout: float, kwargs: Mapping[str, Any] | None = None
    ) -> T:
        return (await self.run_traced(fn, *args, timeout=timeout, kwargs=kwargs)).value

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()


def _cluster_cpus() -> float:
    import ray

    try:
        return float(ray.cluster_resources().get("CPU", 1.0))
    except Exception as exc:  # informational only: fall back to a small limit
        logger.debug("could not read the cluster's CPUs: %s", exc)
        return 1.0


async def setup_server_process(
    config: Mapping[str, Any], block: Mapping[str, Any], *, server_name: str = ""
) -> None:
    """The server runtime's hook: remember the fleet's cluster; join it now if this server says ``ray: true``.

    Raises:
        RayAddressError: a malformed ``ray_head_node_address``.
        MissingExtraError: ``ray: true`` without Ray installed.
        RayConnectError: ``ray: true`` and the cluster cannot be joined (version mismatch, auth, unreachable).
    """
    from gymfleet.ray_support._connect import configure, import_ray

    settings = configure(config)
    if ray_mode(block) != "required":
        return
    import_ray(f"server '{server_name}' (`ray: true`)")
    if settings.address is None:
        raise RayConnectError(
            "This server says `ray: true` but the config has no ray_head_node_address. Start it through the "
            "launcher (which starts a local cluster) or set ray_head_node_address to your cluster.",
        )
    await connect()
