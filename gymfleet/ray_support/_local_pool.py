"""A small pool of killable worker processes: the local fallback for offloaded work when there is no Ray.

Unlike ``concurrent.futures.ProcessPoolExecutor``, one call that hangs can be killed on its own: its worker
gets SIGKILL at the timeout and a fresh worker replaces it in the background, while the other workers keep
serving. Calls cross the process boundary with :mod:`pickle`, so ``fn`` must be a module-level function of a
module the worker can import (the worker gets this process's ``sys.path``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from gymfleet.ray_support._errors import OffloadError, OffloadTimeoutError, RemoteTaskError, WorkerLostError
from gymfleet.ray_support._offload import OffloadResult, function_name
from gymfleet.ray_support._pool_worker import MEMORY_LIMIT_ENV, PRELOAD_ENV

__all__ = ["LocalPool"]

logger = logging.getLogger("gymfleet.ray")

T = TypeVar("T")
_HEADER = struct.Struct("!Q")


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid

    async def call(self, payload: bytes) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(_HEADER.pack(len(payload)) + payload)
        await self.proc.stdin.drain()
        return await self.read()

    async def read(self) -> Any:
        assert self.proc.stdout is not None
        (size,) = _HEADER.unpack(await self.proc.stdout.readexactly(_HEADER.size))
        return pickle.loads(await self.proc.stdout.readexactly(size))

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), 5.0)


class LocalPool:
    """``size`` worker processes; ``await pool.run(fn, *args, timeout=...)`` runs one call on one of them.

    Args:
        size: Worker processes (calls beyond that wait for a free worker; the wait does not count
            against ``timeout``).
        preload: Modules each worker imports at start (heavy imports paid once, not inside a timed call).
        memory_limit_bytes: ``RLIMIT_AS`` of each worker: a runaway allocation raises MemoryError in the
            worker instead of exhausting the machine.
        start_timeout_s: How long a worker may take to start (including ``warmup``).
        warmup: A picklable function each new worker runs once before its first call (first-call costs of
            a library, e.g. sympy's caches, stay out of the timed calls).
    """

    def __init__(
        self,
        size: int = 2,
        *,
        preload: Sequence[str] = (),
        memory_limit_bytes: int | None = None,
        start_timeout_s: float = 30.0,
        env: Mapping[str, str] | None = None,
        warmup: Callable[[], Any] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"LocalPool size must be >= 1, got {size}")
        self.size = size
        self.preload = list(preload)
        self.memory_limit_bytes = memory_limit_bytes
        self.start_timeout_s = start_timeout_s
        self._env = dict(env or {})
        self.warmup = warmup
        self._idle: asyncio.Queue[_Worker] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._spawning: set[asyncio.Task[None]] = set()
        self._busy: set[_Worker] = set()
        self._closed = False
        self.killed = 0  # workers killed at a timeout or a cancellation

    # ------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start every worker now (else they start on first use)."""
        self._ensure_init()
        await asyncio.gather(*(self._spawn_into_idle() for _ in range(self.size - self._live())))

    def _ensure_init(self) -> None:
        if self._closed:
            raise RuntimeError("LocalPool is closed")
        if self._idle is None:
            self._idle = asyncio.Queue()
            self._slots = asyncio.Semaphore(self.size)

    def _live(self) -> int:
        return (self._idle.qsize() if self._idle else 0) + len(self._busy) + len(self._spawning)

    async def _spawn(self) -> _Worker:
        env = {**os.environ, **self._env}
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        if self.memory_limit_bytes:
            env[MEMORY_LIMIT_ENV] = str(int(self.memory_limit_bytes))
        if self.preload:
            env[PRELOAD_ENV] = ",".join(self.preload)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from gymfleet.ray_support._pool_worker import main; main()",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        worker = _Worker(proc)
        try:
            hello = await asyncio.wait_for(worker.read(), self.start_timeout_s)
        except BaseException as exc:
            await worker.kill()
            if not isinstance(exc, (asyncio.TimeoutError, asyncio.IncompleteReadError, OSError)):
                raise  # cancelled (the pool is closing): the half-started worker is gone, nothing to report
            raise WorkerLostError(
                f"a local pool worker did not start within {self.start_timeout_s:g}s ({type(exc).__name__});"
                f" see the server's stderr for its traceback (preload={self.preload})",
                function="<start>",
                backend="local",
            ) from exc
        if hello[0] != "ready":
            await worker.kill()
            raise WorkerLostError(
                f"a local pool worker sent {hello!r} instead of ready", function="<start>", backend="local"
            )
        if self.warmup is not None:
            payload = pickle.dumps((self.warmup, (), {}), protocol=pickle.HIGHEST_PROTOCOL)
            try:
                answer = await asyncio.wait_for(worker.call(payload), self.start_timeout_s)
            except BaseException:
                await worker.kill()
                raise
            if answer[0] == "error":
                logger.warning("warm-up of a local pool worker failed: %s: %s", answer[1], answer[2])
        return worker

    async def _spawn_into_idle(self) -> None:
        worker = await self._spawn()
        if self._closed:
            await worker.kill()
            return
        assert self._idle is not None
        self._idle.put_nowait(worker)

    def _replace_in_background(self) -> None:
        task = asyncio.create_task(self._spawn_into_idle())
        self._spawning.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._spawning.discard(t)
            if not t.cancelled() and t.exception() is not None:
                logger.warning("could not replace a local pool worker: %s", t.exception())

        task.add_done_callback(done)

    async def close(self) -> None:
        """Stop every worker (idle ones by closing their stdin, busy ones by SIGKILL)."""
        self._closed = True
        spawning = list(self._spawning)
        for task in spawning:
            task.cancel()
        await asyncio.gather(*spawning, return_exceptions=True)
        workers = list(self._busy)
        while self._idle is not None and not self._idle.empty():
            workers.append(self._idle.get_nowait())
        await asyncio.gather(*(w.kill() for w in workers), return_exceptions=True)

    # ------------------------------------------------------------------------------ calls
    async def _acquire(self) -> _Worker:
        assert self._idle is not None
        if self._idle.empty() and self._live() < self.size:
            self._replace_in_background()
        return await self._idle.get()

    async def run_traced(
        self, fn: Callable[..., T], *args: Any, timeout: float, kwargs: Mapping[str, Any] | None = None
    ) -> OffloadResult[T]:
        """Like :meth:`run`, and also say which worker ran the call and how long it took."""
        self._ensure_init()
        assert self._slots is not None
        name = function_name(fn)
        try:
            payload = pickle.dumps((fn, tuple(args), dict(kwargs or {})), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise OffloadError(
                f"{name} cannot be sent to a pool worker: {exc}. Use a module-level function.",
                function=name,
                backend="local",
            ) from exc
        async with self._slots:
            worker = await self._acquire()
            self._busy.add(worker)
            start = time.monotonic()
            keep = False
            try:
                answer = await asyncio.wait_for(worker.call(payload), timeout)
                keep = True
            except asyncio.TimeoutError:
                self.killed += 1
                raise OffloadTimeoutError(
                    f"{name} did not finish within {timeout:g}s; its worker (pid {worker.pid}) was killed. "
                    "Raise the timeout if such inputs are legitimate.",
                    function=name,
                    backend="local",
                    timeout_s=timeout,
                ) from None
            except asyncio.CancelledError:
                self.killed += 1
                raise
            except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError) as exc:
                code = worker.proc.returncode
                raise WorkerLostError(
                    f"{name}: local pool worker pid {worker.pid} died while running it (exit code {code}); a "
                    "negative code is the signal that killed it (-9: SIGKILL, often the OOM killer).",
                    function=name,
                    backend="local",
                ) from exc
            finally:
                self._busy.discard(worker)
                if keep and not self._closed:
                    assert self._idle is not None
                    self._idle.put_nowait(worker)
                else:
                    await worker.kill()
                    if not self._closed:
                        self._replace_in_background()
        if answer[0] == "error":
            _, remote_type, message, tb = answer
            raise RemoteTaskError(
                f"{name} raised {remote_type} in local pool worker pid {worker.pid}: {message}",
                function=name,
                backend="local",
                remote_type=remote_type,
                remote_message=message,
                remote_traceback=tb,
            )
        value, node_id, pid, hostname, elapsed = answer[1]
        return OffloadResult(value, "local", node_id, pid, hostname, elapsed, time.monotonic() - start)

    async def run(
        self, fn: Callable[..., T], *args: Any, timeout: float, kwargs: Mapping[str, Any] | None = None
    ) -> T:
        """Run ``fn(*args, **kwargs)`` on a worker; kill the worker if it runs past ``timeout`` seconds.

        Raises:
            OffloadTimeoutError: past ``timeout`` (the worker was killed and is being replaced).
            RemoteTaskError: ``fn`` raised.
            WorkerLostError: the worker died (crash, OOM kill).
        """
        return (await self.run_traced(fn, *args, timeout=timeout, kwargs=kwargs)).value
