"""Run CPU-bound or untrusted work (a sympy verifier, generated code) in a killable process with a deadline.

A verifier that loops inside the server's event loop stalls every session of that server, and ``asyncio.wait_for``
cannot interrupt it (NeMo Gym: a pathological sympy expression "blocked the whole RL job"). :func:`run_isolated`
runs ``fn(*args, **kwargs)`` in a fresh process forked from a clean ``forkserver`` helper, waits without blocking
the event loop, and SIGKILLs the process when ``timeout_s`` passes, raising :class:`DeadlineExceededError`, which a
gymfleet server answers as a typed ``504 timeout`` (the collector records the row as ``timeout``)::

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        reward = await run_isolated(score_with_sympy, answer, expected, timeout_s=10)
        ...

``fn`` and its arguments must be picklable (a module-level function); its exceptions come back as
:class:`IsolatedError` naming the original type and message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from gymfleet.errors import ServerError

__all__ = ["DeadlineExceededError", "IsolatedError", "run_isolated"]

logger = logging.getLogger("gymfleet.server")

T = TypeVar("T")
_POLL_S = 0.02  # result check interval while waiting (the event loop keeps serving meanwhile)
_REAP_TIMEOUT_S = 5.0


class IsolatedError(ServerError):
    """The isolated function raised; carries the original exception's type name."""

    def __init__(self, message: str, *, error_type: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class DeadlineExceededError(ServerError):
    """Work did not finish within its deadline and was stopped (an isolated process killed, a coroutine cancelled).

    gymfleet servers answer it as ``504`` with error type ``timeout``."""

    def __init__(self, message: str, *, timeout_s: float) -> None:
        super().__init__(message)
        self.timeout_s = timeout_s


def _child(conn: multiprocessing.connection.Connection, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
    try:
        result = ("ok", fn(*args, **kwargs))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent, typed
        result = ("error", (type(exc).__name__, str(exc)[:2000]))
    try:
        conn.send(result)
    finally:
        conn.close()


def _context() -> multiprocessing.context.BaseContext:
    # forkserver: children fork from a clean single-threaded helper, not from the (multi-threaded) server process.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if isinstance(path, str) and not os.path.isabs(path):
        # The child re-imports the main module (for functions defined in app.py) from this path; multiprocessing
        # resolves a relative one against the directory of its first import, which a forked server may have left.
        main.__file__ = os.path.abspath(path)  # type: ignore[union-attr]
    return multiprocessing.get_context(method)


async def run_isolated(fn: Callable[..., T], *args: Any, timeout_s: float, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a child process; killed after ``timeout_s`` seconds.

    Raises:
        DeadlineExceededError: the deadline passed (the child was SIGKILLed).
        IsolatedError: ``fn`` raised, or the child died without an answer (OOM kill, segfault).
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    ctx = _context()
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(sender, fn, args, kwargs), daemon=True)
    name = getattr(fn, "__qualname__", repr(fn))
    started = time.monotonic()
    await asyncio.to_thread(process.start)  # the first start launches the forkserver: keep it off the loop
    sender.close()
    try:
        deadline = started + timeout_s
        while not receiver.poll():
            if not process.is_alive() and not receiver.poll():
                raise IsolatedError(
                    f"isolated call {name} died without an answer (exit code {process.exitcode}; killed by the "
                    "OOM killer or a crash?)",
                    error_type="ProcessDied",
                )
            if time.monotonic() >= deadline:
                raise DeadlineExceededError(
                    f"isolated call {name} did not finish within {timeout_s:g}s; its process was killed. "
                    "Raise the deadline if the work is legitimately slow, or bound the work (input size, steps).",
                    timeout_s=timeout_s,
                )
            await asyncio.sleep(_POLL_S)
        try:
            status, value = receiver.recv()
        except EOFError:  # the pipe closed without an answer: the child died
            await asyncio.to_thread(process.join, _REAP_TIMEOUT_S)
            raise IsolatedError(
                f"isolated call {name} died without an answer (exit code {process.exitcode}; killed by the OOM "
                "killer, a crash, or it could not import the function's module)",
                error_type="ProcessDied",
            ) from None
    finally:
        receiver.close()
        if process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid or 0, signal.SIGKILL)
        await asyncio.to_thread(process.join, _REAP_TIMEOUT_S)  # reap: no zombie per call
    if status == "error":
        error_type, message = value
        raise IsolatedError(f"isolated call {name} raised {error_type}: {message}", error_type=error_type)
    return value  # type: ignore[no-any-return]
