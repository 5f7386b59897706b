"""Process faults and the checks that follow them: SIGKILL / SIGSTOP / SIGCONT chosen processes, wait for them to be
gone, find descendants and listening ports through ``/proc``, tell whether a port can be bound again."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable

from gymfleet.launcher.ports import describe_port_holder

__all__ = [
    "descendants",
    "holder_of",
    "kill",
    "pid_alive",
    "port_bindable",
    "resume",
    "stop",
    "wait_for",
    "wait_gone",
]


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill(pid: int, *, group: bool = False) -> float:
    """SIGKILL a process (or its whole group); returns the monotonic time it was sent."""
    with contextlib.suppress(ProcessLookupError):
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)
    return time.monotonic()


def stop(pid: int) -> float:
    """SIGSTOP: the process keeps its sockets open but never answers (a hung host, a GC pause, a debugger)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
    return time.monotonic()


def resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> float | None:
    """Seconds until ``predicate()`` held, or None if it did not within ``timeout_s`` (bounded polling)."""
    start = time.monotonic()
    deadline = start + timeout_s
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval_s)


def wait_gone(pids: Iterable[int], timeout_s: float) -> float | None:
    """Seconds until every pid is gone (not even a zombie), or None."""
    pids = list(pids)
    return wait_for(lambda: not any(pid_alive(p) for p in pids), timeout_s)


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children, grandchildren, ...)."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                parent_of[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    out: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, pp in parent_of.items() if pp == current]
        out.extend(kids)
        frontier.extend(kids)
    return [p for p in out if pid_alive(p)]


def port_bindable(port: int, host: str = "127.0.0.1") -> bool:
    """True if this process could listen on ``host:port`` right now (what an immediate restart needs)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def holder_of(port: int) -> str | None:
    """Who listens on ``port`` (gymfleet's own description, from /proc)."""
    return describe_port_holder(port)
