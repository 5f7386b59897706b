"""The lifeline between a server process and its launcher, used inside server processes.

The launcher starts every server in its own process group with ``PR_SET_PDEATHSIG=SIGTERM``, so the
kernel sends SIGTERM when the launcher dies, even by SIGKILL. Two helpers complete that:

* :func:`die_with_parent` asks the kernel for that death signal (the launcher's spawners call it in
  the child before it runs anything);
* :func:`install_parent_watch` notices a changed parent pid (belt and braces next to PDEATHSIG,
  which is Linux-only and is cleared by set-uid execs);
* :func:`kill_own_process_group` lets a server take its helpers (sidecars, sandboxes) down with it,
  so a dead launcher never leaves grandchildren holding ports.

The small ``/proc`` readers for process groups live here too; the launcher uses them to tell when a
group is really gone (zombies still answer ``kill(pid, 0)``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

__all__ = [
    "PARENT_PID_ENV",
    "die_with_parent",
    "group_has_live_members",
    "install_parent_watch",
    "kill_own_process_group",
    "process_group_members",
]

logger = logging.getLogger("gymfleet.launcher")

PARENT_PID_ENV = "GYMFLEET_PARENT_PID"  # set by the launcher in every child's environment
_DEAD_STATES = frozenset("ZXx")  # zombie / dead in /proc/<pid>/stat
_KILL_ROUNDS = 3  # re-scans when signalling members one by one, to catch children forked meanwhile
_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


# Resolved once at import, in the parent: a child between fork and exec only calls it.
_PRCTL = _load_prctl()


def die_with_parent(expected_parent: int, sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    Safe between fork and exec. The kernel ties the signal to the parent *thread* that forked us.

    Args:
        expected_parent: The parent's pid. If the parent already died (we were re-parented before the
            call took effect), no signal will ever come, so the caller must exit: this returns False.
        sig: The signal to receive.

    Returns:
        False when the parent is already gone.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    return os.getppid() == expected_parent


def install_parent_watch(
    expected_ppid: int | None = None,
    *,
    on_orphan: Callable[[], None],
    interval_s: float = 0.5,
) -> None:
    """Call ``on_orphan`` once, from a daemon thread, when this process's parent changes.

    A typical ``on_orphan`` is ``lambda: os.kill(os.getpid(), signal.SIGTERM)``, which makes the
    server shut down through its normal signal handling on the main thread.

    Args:
        expected_ppid: The launcher's pid. Default: ``$GYMFLEET_PARENT_PID``, which
            :class:`~gymfleet.launcher.process.ManagedProcess` sets for its children, else the parent
            pid at the time of the call (which misses a launcher that died before this call). When it
            already differs, ``on_orphan`` runs right away.
        on_orphan: Called from the watch thread; exceptions are logged.
        interval_s: Seconds between checks.
    """
    expected = expected_ppid if expected_ppid is not None else _parent_pid_from_env()
    if expected is None:
        expected = os.getppid()

    def watch() -> None:
        while os.getppid() == expected:
            time.sleep(interval_s)
        logger.warning("parent process %d is gone (parent is now %d); shutting down", expected, os.getppid())
        try:
            on_orphan()
        except Exception:
            logger.exception("on_orphan callback of the parent watch failed")

    threading.Thread(target=watch, name="gymfleet-parent-watch", daemon=True).start()


def _parent_pid_from_env() -> int | None:
    value = os.environ.get(PARENT_PID_ENV, "")
    try:
        return int(value) if value else None
    except ValueError:
        logger.warning("ignoring %s=%r: not a process id", PARENT_PID_ENV, value)
        return None


def kill_own_process_group(sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to every other process of this process's group.

    Only acts when this process leads its group (the launcher starts every server that way); a
    process in someone else's group (an interactive shell's job, say) logs a warning and does
    nothing, because that group is not ours to kill. The calling process itself is not signalled.

    Args:
        sig: The signal to send.
    """
    pid = os.getpid()
    pgid = os.getpgrp()
    if pgid != pid:
        logger.warning(
            "not signalling process group %d: this process (%d) does not lead it, so it may hold "
            "processes that are not ours; start the server in its own group to use this",
            pgid,
            pid,
        )
        return
    # Fast, atomic path: ignore the signal here for the instant of killpg, so the whole group,
    # including children forked a moment ago, gets it while we do not. Needs the main thread.
    if (
        pgid > 1  # as PID 1 (a container's init), killpg(1) would be kill(-1): every process we may signal
        and sig not in (signal.SIGKILL, signal.SIGSTOP)
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(sig) is not None  # None: a handler set from C that we cannot restore
    ):
        previous = signal.signal(sig, signal.SIG_IGN)
        try:
            os.killpg(pgid, sig)
        finally:
            signal.signal(sig, previous)
        return
    for _ in range(_KILL_ROUNDS):
        others = [member for member in process_group_members(pgid) if member != pid]
        if not others:
            return
        for member in others:
            try:
                os.kill(member, sig)
            except (ProcessLookupError, PermissionError):
                continue


def process_group_members(pgid: int, *, include_zombies: bool = False) -> list[int]:
    """List the pids in a process group (Linux ``/proc``; an empty list elsewhere).

    Args:
        pgid: The process group id.
        include_zombies: Also list exited processes nobody has reaped yet.

    Returns:
        The pids, sorted.
    """
    members: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for entry in entries:
        if not entry.isdigit():
            continue
        stat = _read_stat(int(entry))
        if stat is None:
            continue
        state, group = stat
        if group == pgid and (include_zombies or state not in _DEAD_STATES):
            members.append(int(entry))
    return sorted(members)


def group_has_live_members(pgid: int) -> bool:
    """Tell whether a process group still has a process that is not a zombie.

    Args:
        pgid: The process group id.

    Returns:
        True while some member is alive (or, without ``/proc``, while ``killpg(pgid, 0)`` succeeds).
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc/self"):
        return True
    # killpg(…, 0) also succeeds for zombies, which an init that does not reap may keep forever.
    return bool(process_group_members(pgid))


def _read_stat(pid: int) -> tuple[str, int] | None:
    """(state, pgid) of a process, from /proc/<pid>/stat; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses, so split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    if len(fields) < 3:
        return None
    try:
        return fields[0].decode("ascii", "replace"), int(fields[2])
    except ValueError:
        return None
