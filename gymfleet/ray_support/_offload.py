"""``await run(fn, *args, timeout=...)``: run a CPU-heavy function as a Ray task without blocking the loop.

* The task is submitted with ``scheduling_strategy="SPREAD"`` (work fans out over the cluster's nodes),
  ``num_cpus`` as asked, and no automatic retry (a verify that crashed a worker is reported, not re-run
  behind the caller's back).
* The caller awaits the task's future; the event loop keeps serving other requests meanwhile.
* On timeout, and when the awaiting coroutine is cancelled (e.g. the HTTP client went away, see
  :class:`~gymfleet.ray_support.CancelOnDisconnect`), the task is cancelled with ``ray.cancel(force=True)``,
  which kills the worker process: a function stuck in a C loop (sympy, regex) cannot be interrupted otherwise.
* What the function raised comes back as :class:`RemoteTaskError` (remote type, message, traceback); a dead
  worker or node as :class:`WorkerLostError`; a timeout as :class:`OffloadTimeoutError`.

``fn`` must be picklable: a module-level function. Modules that the cluster's workers cannot import (an
environment's own files) are shipped by value with :func:`ship_module`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Generic, TypeVar

from gymfleet.ray_support import _remote_call
from gymfleet.ray_support._connect import _state, connect, import_ray
from gymfleet.ray_support._errors import OffloadError, OffloadTimeoutError, RemoteTaskError, WorkerLostError

__all__ = ["OffloadResult", "function_name", "run", "run_traced", "ship_module"]

logger = logging.getLogger("gymfleet.ray")

T = TypeVar("T")

# ray.cancel and Ray Client submissions are blocking gRPC calls: they run here, never on the event loop.
_blocking = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="gymfleet-ray")
_remote_cache: dict[tuple[float, int | None], Any] = {}
_shipped: set[str] = set()


@dataclass(frozen=True)
class OffloadResult(Generic[T]):
    """A finished call: its value and where it ran (``backend`` is ``ray`` or ``local``)."""

    value: T
    backend: str
    node_id: str
    pid: int
    hostname: str
    elapsed_s: float  # inside the worker
    wall_s: float  # as the caller saw it: queueing + transfer + execution


def function_name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def ship_module(module: ModuleType | str) -> None:
    """Pickle ``module``'s functions by value when sending them to Ray (its workers need not import it).

    Use it for an environment's own helper modules, which live in a server directory that cluster nodes
    do not have on their path. Their third-party imports (sympy, ...) must be installed on every node.
    """
    name = module if isinstance(module, str) else module.__name__
    if name in _shipped:
        return
    ray = import_ray()
    ray.cloudpickle.register_pickle_by_value(sys.modules[name])
    _shipped.add(name)


def _remote(ray: ModuleType, num_cpus: float, memory_bytes: int | None) -> Any:
    key = (num_cpus, memory_bytes)
    remote = _remote_cache.get(key)
    if remote is None:
        ship_module(_remote_call)
        options: dict[str, Any] = {"num_cpus": num_cpus, "scheduling_strategy": "SPREAD", "max_retries": 0}
        if memory_bytes:
            options["memory"] = memory_bytes
        remote = ray.remote(_remote_call.traced_call).options(**options)
        _remote_cache[key] = remote
    return remote


def _cancel(ray: ModuleType, ref: Any, why: str) -> None:
    def cancel() -> None:
        try:
            ray.cancel(ref, force=True)
        except Exception as exc:  # already finished, or the cluster went away: nothing left to stop
            logger.debug("ray.cancel after %s: %s", why, exc)

    _blocking.submit(cancel)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: the task we cancelled failing later is expected, not worth a log line


def _translate(exc: BaseException, name: str) -> OffloadError:
    from ray import exceptions as rex

    if isinstance(exc, rex.RayTaskError):
        cause = exc.cause
        remote_type = type(cause).__name__ if cause is not None else "Exception"
        remote_message = str(cause) if cause is not None else str(exc)
        return RemoteTaskError(
            f"{name} raised {remote_type} in a Ray task: {remote_message}",
            function=name,
            backend="ray",
            remote_type=remote_type,
            remote_message=remote_message,
            remote_traceback=getattr(exc, "traceback_str", None) or str(exc),
        )
    lost = tuple(
        getattr(rex, n)
        for n in (
            "WorkerCrashedError",
            "NodeDiedError",
            "ObjectLostError",
            "OutOfMemoryError",
            "LocalRayletDiedError",
            "TaskCancelledError",
        )
        if hasattr(rex, n)
    )
    if isinstance(exc, lost):
        return WorkerLostError(
            f"{name}: the Ray worker running it was lost ({type(exc).__name__}: {str(exc).strip()[:300]}). "
            "Check the cluster's logs (out-of-memory kills, node failures).",
            function=name,
            backend="ray",
        )
    return OffloadError(
        f"{name} failed on Ray: {type(exc).__name__}: {str(exc).strip()[:500]}", function=name, backend="ray"
    )


async def run_traced(
    fn: Callable[..., T],
    *args: Any,
    timeout: float,
    num_cpus: float = 1.0,
    memory_bytes: int | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> OffloadResult[T]:
    """Like :func:`run`, and also say where the call ran (node id, pid, host) and how long it took."""
    ray = import_ray()
    await connect()
    name = function_name(fn)
    remote = _remote(ray, num_cpus, memory_bytes)
    call_args = (fn, tuple(args), dict(kwargs or {}))
    start = time.monotonic()
    if _state.connected_to is not None and _state.connected_to.kind == "client":
        ref = await asyncio.wrap_future(_blocking.submit(remote.remote, *call_args))
    else:
        ref = remote.remote(*call_args)  # local submission: microseconds, no network round trip
    # Shielded: a timeout must not cancel Ray's own future (Ray Client's stream thread then fails setting it).
    done = asyncio.wrap_future(ref.future())
    done.add_done_callback(_consume)
    try:
        value, node_id, pid, hostname, elapsed = await asyncio.wait_for(asyncio.shield(done), timeout)
    except asyncio.TimeoutError:
        _cancel(ray, ref, "timeout")
        raise OffloadTimeoutError(
            f"{name} did not finish within {timeout:g}s on Ray; the task was cancelled and its worker "
            "killed. Raise the timeout if such inputs are legitimate.",
            function=name,
            backend="ray",
            timeout_s=timeout,
        ) from None
    except asyncio.CancelledError:
        _cancel(ray, ref, "caller cancelled")
        raise
    except OffloadError:
        raise
    except Exception as exc:
        raise _translate(exc, name) from exc
    return OffloadResult(value, "ray", node_id, pid, hostname, elapsed, time.monotonic() - start)


async def run(
    fn: Callable[..., T],
    *args: Any,
    timeout: float,
    num_cpus: float = 1.0,
    memory_bytes: int | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> T:
    """Run ``fn(*args, **kwargs)`` as a Ray task on the fleet's cluster and return its value.

    Args:
        fn: A picklable (module-level) function.
        *args: Its positional arguments (pickled to the worker).
        timeout: Seconds until the task is cancelled (its worker killed) and OffloadTimeoutError is raised.
            Counts from submission: queueing on a saturated cluster counts too.
        num_cpus: CPUs the task reserves (Ray schedules at most ``node CPUs / num_cpus`` at once per node).
        memory_bytes: Memory the task reserves for scheduling (not a hard limit).
        kwargs: Keyword arguments for ``fn``.

    Raises:
        MissingExtraError: Ray is not installed (``pip install 'gymfleet[ray]'``).
        RayConnectError: the cluster cannot be joined (subclasses: version mismatch, auth).
        OffloadTimeoutError: past ``timeout``.
        RemoteTaskError: ``fn`` raised.
        WorkerLostError: the worker or its node died.
    """
    result = await run_traced(
        fn, *args, timeout=timeout, num_cpus=num_cpus, memory_bytes=memory_bytes, kwargs=kwargs
    )
    return result.value
