"""Start a child the classic way: ``subprocess.Popen``, a fresh interpreter (``spawn="exec"``).

The child leads a new session (its own process group), gets ``PR_SET_PDEATHSIG=SIGTERM`` tied to this
process, writes stdout and stderr into one pipe, and is reaped by a thread that reports its exit code to
the event loop, so no zombie is left whatever the loop does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence

from gymfleet.launcher.lifeline import die_with_parent
from gymfleet.launcher.zygote import ZygoteChild

__all__ = ["spawn_exec"]


def spawn_exec(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None,
    env: Mapping[str, str],
    pass_fds: Sequence[int],
) -> ZygoteChild:
    """Popen ``argv``; return its pid, the read end of its output and its exit code to come.

    Raises:
        OSError, subprocess.SubprocessError: The program or the working directory is missing, etc.
    """
    loop = asyncio.get_running_loop()
    popen = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        pass_fds=pass_fds,
        start_new_session=True,
        preexec_fn=functools.partial(_child_setup, os.getpid()),
    )
    exit_future: asyncio.Future[int] = loop.create_future()
    threading.Thread(
        target=_reap, args=(popen, loop, exit_future), name=f"gymfleet-reap-{popen.pid}", daemon=True
    ).start()
    assert popen.stdout is not None  # stdout=PIPE
    return ZygoteChild(popen.pid, popen.stdout, exit_future)  # type: ignore[arg-type]


def _child_setup(launcher_pid: int) -> None:
    """Runs in the child between fork and exec: ask for SIGTERM when the launcher dies."""
    if not die_with_parent(launcher_pid):
        os.kill(os.getpid(), signal.SIGTERM)


def _reap(
    popen: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop, future: asyncio.Future[int]
) -> None:
    """Thread body: wait for the child (reaping it, so no zombie) and report to the loop."""
    returncode = popen.wait()
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(_resolve, future, returncode)


def _resolve(future: asyncio.Future[int], returncode: int) -> None:
    if not future.done():
        future.set_result(returncode)
