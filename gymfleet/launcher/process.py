"""One supervised child process: its own process group, a death signal, restarts with a budget.

What NeMo Gym got wrong and this module does not: children shared the launcher's process group (so
Ctrl-C and stop left servers and their sidecars alive), a SIGKILLed launcher orphaned every server,
killed children were never reaped (zombies), and a crash surfaced as "Process finished unexpectedly"
with no exit code and no output.

Here every child is a process-group leader (``start_new_session``); stopping signals the whole group
(SIGTERM, a grace period, then SIGKILL) and always reaps the child. On Linux each child gets
``PR_SET_PDEATHSIG=SIGTERM``, so the kernel stops it when the launcher dies, even by SIGKILL
(servers take their own helpers down with :func:`gymfleet.launcher.lifeline.kill_own_process_group`).
Note that the kernel ties the death signal to the *thread* that started the child: run the event
loop in a thread that lives as long as the launcher (``asyncio.run`` in the main thread does).

Two ways to start a child (``spawn``): ``"exec"`` (``subprocess.Popen``: a fresh interpreter) or a
:class:`~gymfleet.launcher.zygote.Zygote`, which forks an already-imported Python (see that module;
the child's parent is then the zygote, which dies with the launcher). ``"auto"`` (the default) uses
this process's default zygote when one was started and it can run the command, else exec. Either
way the child leads its own process group, so stopping, reaping, restarts and exit reports are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import os
import random
import signal
import subprocess
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from gymfleet.errors import ConfigError, LauncherError, RestartBudgetExceededError, ServerStartupError
from gymfleet.launcher._exec_spawn import spawn_exec
from gymfleet.launcher.lifeline import PARENT_PID_ENV, group_has_live_members
from gymfleet.launcher.logs import ProcessLog
from gymfleet.launcher.zygote import Zygote, default_zygote

__all__ = ["ManagedProcess", "ProcessState", "RestartPolicy", "describe_returncode"]

logger = logging.getLogger("gymfleet.launcher")

_ORPHAN_GRACE_S = 2.0  # SIGTERM-to-SIGKILL time for helpers left behind by a child that exited
_KILL_WAIT_S = 5.0  # how long a SIGKILLed group may take to disappear
_READER_WAIT_S = 2.0  # how long to wait for the last output after the group is gone
_CALLBACK_TIMEOUT_S = 30.0  # bound on an awaitable on_exit callback
_POLL_S = 0.01
_POLL_MAX_S = 0.1
_DEFAULT_GRACE_S = 5.0
_LAST_LINES = 20


class ProcessState(str, enum.Enum):
    """Where a :class:`ManagedProcess` is in its life."""

    NEW = "new"  # not started yet
    STARTING = "starting"  # being spawned
    RUNNING = "running"  # the child is alive (whether it serves yet is the caller's check)
    RESTARTING = "restarting"  # the child exited; waiting out the backoff before the next start
    STOPPED = "stopped"  # stopped on request, or exited with code 0 and no restart policy
    FAILED = "failed"  # exited with an error and no restart policy, or the restart budget ran out


@dataclass(frozen=True)
class RestartPolicy:
    """When and how fast to restart a child that exited on its own.

    More than ``max_restarts`` restarts within ``window_s`` seconds marks the process failed. The
    delay before restart number ``n`` (counted within the window) is
    ``min(backoff_max_s, backoff_initial_s * 2**n)``, of which a random half is jitter.
    """

    max_restarts: int = 5
    window_s: float = 300.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.window_s <= 0 or self.backoff_initial_s < 0:
            raise ConfigError(
                f"Invalid restart policy {self!r}: max_restarts must be >= 0, window_s > 0 and "
                "backoff_initial_s >= 0."
            )
        if self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError(
                f"Invalid restart policy {self!r}: backoff_max_s must be at least backoff_initial_s."
            )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before restart number ``attempt`` (0-based), jitter included."""
        base = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** min(attempt, 30))
        return base / 2 + random.uniform(0.0, base / 2)


def describe_returncode(returncode: int) -> str:
    """Say how a process ended, e.g. ``"exit code 1"`` or ``"signal SIGKILL (9)"``."""
    if returncode < 0:
        return f"signal {_signal_name(-returncode)} ({-returncode})"
    if returncode > 128 and _signal_name(returncode - 128).startswith("SIG"):
        # A shell in between reports a killed child as 128 + the signal number.
        return f"exit code {returncode} (probably signal {_signal_name(returncode - 128)})"
    return f"exit code {returncode}"


OnExit = Callable[["ManagedProcess", int], "Awaitable[None] | None"]


class ManagedProcess:
    """One child process, supervised from asyncio.

    Args:
        name: The server's name (logs, errors, the log prefix).
        argv: The command; ``argv[0]`` is looked up on ``PATH``.
        cwd: Working directory of the child; default: the launcher's.
        env: The child's complete environment; None inherits the launcher's. Either way
            ``GYMFLEET_PARENT_PID`` is set to the launcher's pid (for the child's parent watch).
        pass_fds: File descriptors the child inherits (listening sockets bound by the launcher).
        log: Where the child's output goes; default: a :class:`ProcessLog` printing to stderr.
        restart: Restart the child when it exits on its own; None never restarts. Any exit not asked
            for by :meth:`stop` counts, code 0 included: a server is not supposed to exit.
        on_exit: Called (and awaited, up to 30 s) after every exit with the return code. By then
            :attr:`state` already says what happens next: ``restarting``, ``failed`` or ``stopped``.
        spawn: ``"exec"``, a :class:`~gymfleet.launcher.zygote.Zygote`, or ``"auto"``: the default
            zygote when one runs (:func:`~gymfleet.launcher.zygote.start_default`). A zygote that cannot
            run the command (not this Python, interpreter options) or is gone falls back to exec.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        pass_fds: Sequence[int] = (),
        log: ProcessLog | None = None,
        restart: RestartPolicy | None = None,
        on_exit: OnExit | None = None,
        spawn: Zygote | Literal["exec", "auto"] = "auto",
    ) -> None:
        if not argv:
            raise ConfigError(f"Server {name!r} has an empty command; give the program to run.")
        self.name = name
        self.argv = [os.fspath(arg) for arg in argv]
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.pass_fds = tuple(pass_fds)
        self.log = log if log is not None else ProcessLog(name)
        self._owns_log = log is None
        self.restart_policy = restart
        self._on_exit = on_exit
        self.spawn = spawn
        self.error: LauncherError | None = None  # why the process ended up failed, when it did

        self._pid: int | None = None
        self._returncode: int | None = None
        self._restarts = 0
        self._state = ProcessState.NEW
        self._exit: asyncio.Future[int] | None = None
        self._pipe: asyncio.ReadTransport | None = None
        self._reader: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[int | None] | None = None
        self._stopping = False
        self._stop_deadline = 0.0
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._restart_times: deque[float] = deque()

    # ------------------------------------------------------------------------------ state
    @property
    def pid(self) -> int | None:
        """Pid of the current (or last) child; None before the first start."""
        return self._pid

    @property
    def returncode(self) -> int | None:
        """Return code of the last exit (negative: killed by that signal); None while it never exited."""
        return self._returncode

    @property
    def restarts(self) -> int:
        """How many times the child was restarted since :meth:`start`."""
        return self._restarts

    @property
    def state(self) -> ProcessState:
        return self._state

    @property
    def is_running(self) -> bool:
        """True while a child process is alive."""
        return self._exit is not None and not self._exit.done()

    def exit_report(self, n: int = _LAST_LINES) -> str:
        """A description of the last exit with the last ``n`` output lines, for error messages."""
        how = (
            "has not exited"
            if self._returncode is None
            else f"exited with {describe_returncode(self._returncode)}"
        )
        lines = self.log.last_lines(n)
        shown = "\n".join(f"    {line}" for line in lines) if lines else "    (no output)"
        where = f"; full log: {self.log.path}" if self.log.path else ""
        return f"server {self.name!r} (pid {self._pid}) {how}{where}. Last output lines:\n{shown}"

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name!r} pid={self._pid} state={self._state.value}>"

    # ------------------------------------------------------------------------------ control
    async def start(self) -> None:
        """Spawn the child and begin supervising it.

        Raises:
            LauncherError: It is already running.
            ServerStartupError: The command could not be started (missing program, bad cwd, ...).
        """
        if self._state in (ProcessState.STARTING, ProcessState.RUNNING, ProcessState.RESTARTING):
            raise LauncherError(
                f"Server {self.name!r} is already {self._state.value} (pid {self._pid}); stop() it first."
            )
        self._stopping = False
        self._stop_task = None
        self._wake.clear()
        self._done.clear()
        self._restart_times.clear()
        self._restarts = 0
        self._returncode = None
        self.error = None
        self._state = ProcessState.STARTING
        try:
            await self._spawn()
        except ServerStartupError as exc:
            self._state = ProcessState.FAILED
            self.error = exc
            self._done.set()
            raise
        self._state = ProcessState.RUNNING
        self._supervisor = asyncio.create_task(self._supervise(), name=f"gymfleet-supervise-{self.name}")
        if self._stopping:  # stop() was called while we were spawning
            self._stop_task = asyncio.create_task(
                self._stop(_DEFAULT_GRACE_S), name=f"gymfleet-stop-{self.name}"
            )

    async def stop(self, grace_s: float = _DEFAULT_GRACE_S) -> int | None:
        """Stop the child and everything in its process group; never restarts it afterwards.

        Sends SIGTERM to the group, waits up to ``grace_s`` seconds, then SIGKILLs what is left, and
        reaps the child. Safe to call more than once and from several tasks.

        Returns:
            The child's last return code; None if it was never started.
        """
        if not self._stopping:
            self._stop_deadline = time.monotonic() + grace_s
        self._stopping = True
        self._wake.set()
        if self._supervisor is None:
            return self._returncode
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._stop(grace_s), name=f"gymfleet-stop-{self.name}")
        return await asyncio.shield(self._stop_task)

    async def wait(self, timeout_s: float | None = None) -> int:
        """Wait until the process is stopped or failed for good (no restart pending).

        Args:
            timeout_s: Give up after this many seconds (raises ``asyncio.TimeoutError``).

        Returns:
            The last return code.
        """
        if self._supervisor is None and not self._done.is_set():
            raise LauncherError(f"Server {self.name!r} was never started; call start() before wait().")
        await asyncio.wait_for(self._done.wait(), timeout_s)
        return self._returncode if self._returncode is not None else -1

    # ------------------------------------------------------------------------------ internals
    async def _spawn(self) -> None:
        env = dict(os.environ if self.env is None else self.env)
        zygote = self._zygote(env)
        if zygote is not None:
            env[PARENT_PID_ENV] = str(zygote.pid)  # the parent watch follows the real parent
            try:
                child = await zygote.spawn(
                    self.name, self.argv, cwd=self.cwd, env=env, pass_fds=self.pass_fds
                )
            except OSError as exc:
                raise self._startup_error(exc) from exc
            except LauncherError as exc:  # the zygote is gone or refused: a fresh interpreter still works
                logger.warning("%s: starting %s with exec instead", exc, self.name)
            else:
                await self._attach(child.pid, child.exit, child.output, "zygote")
                return
        env[PARENT_PID_ENV] = str(os.getpid())
        try:
            child = spawn_exec(self.argv, cwd=self.cwd, env=env, pass_fds=self.pass_fds)
        except (OSError, subprocess.SubprocessError) as exc:
            raise self._startup_error(exc) from exc
        await self._attach(child.pid, child.exit, child.output, "exec")

    def _zygote(self, env: Mapping[str, str]) -> Zygote | None:
        if self.spawn == "exec":
            return None
        zygote = default_zygote() if self.spawn == "auto" else self.spawn
        if zygote is None or not zygote.alive or not zygote.can_run(self.argv, env):
            return None
        return zygote

    def _startup_error(self, exc: BaseException) -> ServerStartupError:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return ServerStartupError(
            f"Could not start server {self.name!r}: {reason} (command {self.argv[0]!r}, "
            f"working directory {self.cwd or os.getcwd()!r}). Check that the program exists and is "
            "executable and that the working directory exists.",
            server_name=self.name,
        )

    async def _attach(self, pid: int, exit_future: asyncio.Future[int], output: BinaryIO, how: str) -> None:
        """Start reading a new child's output; it is supervised from here on."""
        loop = asyncio.get_running_loop()
        self._pid = pid
        self._exit = exit_future
        reader = asyncio.StreamReader()
        try:
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), output)
        except OSError as exc:  # no unsupervised child may outlive this error
            _signal_group(pid, signal.SIGKILL)
            output.close()
            raise ServerStartupError(
                f"Could not read the output of server {self.name!r} (pid {pid}): {exc}; it was killed.",
                server_name=self.name,
            ) from exc
        self._pipe = transport
        self._reader = asyncio.create_task(self.log.consume(reader), name=f"gymfleet-output-{self.name}")
        self.log.note(f"started pid {pid} ({how}): {' '.join(self.argv)}")
        logger.info("started %s (pid %d, %s)", self.name, pid, how)

    async def _supervise(self) -> None:
        try:
            while True:
                assert self._exit is not None and self._pid is not None
                returncode = await self._exit
                await self._finish_incarnation(self._pid)
                self._returncode = returncode
                self.log.note(f"pid {self._pid} exited with {describe_returncode(returncode)}")
                delay = self._decide(returncode)
                await self._call_on_exit(returncode)
                if self._state is not ProcessState.RESTARTING:
                    return
                if await self._sleep_unless_stopped(delay):
                    self._state = ProcessState.STOPPED
                    return
                self._restart_times.append(time.monotonic())
                self._restarts += 1
                try:
                    await self._spawn()
                except ServerStartupError as exc:
                    self._state = ProcessState.FAILED
                    self.error = exc
                    logger.error("%s", exc)
                    return
                self._state = ProcessState.RUNNING
        finally:
            if self._owns_log and self._state in (ProcessState.STOPPED, ProcessState.FAILED):
                self.log.close()
            self._done.set()

    def _decide(self, returncode: int) -> float:
        """Set the next state after an exit; return the restart delay when restarting."""
        how = describe_returncode(returncode)
        policy = self.restart_policy
        if self._stopping:
            self._state = ProcessState.STOPPED
            logger.info("stopped %s (pid %s, %s)", self.name, self._pid, how)
            return 0.0
        if policy is None:
            self._state = ProcessState.STOPPED if returncode == 0 else ProcessState.FAILED
            log = logger.warning if returncode == 0 else logger.error
            log("%s; it is not restarted (no restart policy)", self.exit_report())
            return 0.0
        now = time.monotonic()
        while self._restart_times and now - self._restart_times[0] > policy.window_s:
            self._restart_times.popleft()
        recent = len(self._restart_times)
        if recent >= policy.max_restarts:
            self._state = ProcessState.FAILED
            message = (
                f"Giving up on server {self.name!r}: it exited {recent + 1} times within "
                f"{policy.window_s:.0f} s (restart budget: {policy.max_restarts} restarts), last with "
                f"{how}. Fix the cause shown in its output, then start it again (or raise "
                f"max_restarts / shorten window_s).\n{self.exit_report()}"
            )
            self.error = RestartBudgetExceededError(message, server_name=self.name)
            logger.error("%s", message)
            return 0.0
        delay = policy.delay(recent)
        self._state = ProcessState.RESTARTING
        logger.warning(
            "server %s (pid %s) exited with %s; restarting in %.2f s "
            "(restart %d of at most %d within %.0f s)",
            self.name,
            self._pid,
            how,
            delay,
            recent + 1,
            policy.max_restarts,
            policy.window_s,
        )
        self.log.note(f"restarting in {delay:.2f} s")
        return delay

    async def _finish_incarnation(self, pgid: int) -> None:
        """After the child exited: clear its group, collect its last output, close the pipe."""
        deadline = self._stop_deadline if self._stopping else time.monotonic() + _ORPHAN_GRACE_S
        await self._clear_group(pgid, deadline)
        if self._reader is not None:
            # The pipe reaches EOF once every process holding its write end is gone.
            done, _ = await asyncio.wait({self._reader}, timeout=_READER_WAIT_S)
            if not done:
                logger.warning("output of %s did not end %.0f s after it exited", self.name, _READER_WAIT_S)
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
            elif self._reader.exception() is not None:
                logger.error("reading the output of %s failed: %r", self.name, self._reader.exception())
            self._reader = None
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None

    async def _clear_group(self, pgid: int, deadline: float) -> None:
        """SIGTERM what is left of a process group, then SIGKILL it at ``deadline``."""
        if not group_has_live_members(pgid):
            return
        if not self._stopping:
            logger.warning("%s left processes behind in its group %d; terminating them", self.name, pgid)
            _signal_group(pgid, signal.SIGTERM)
        if await _wait_group_gone(pgid, deadline):
            return
        logger.warning("processes of %s (group %d) ignored SIGTERM; killing them", self.name, pgid)
        _signal_group(pgid, signal.SIGKILL)
        if not await _wait_group_gone(pgid, time.monotonic() + _KILL_WAIT_S):
            logger.error(
                "processes of %s (group %d) survived SIGKILL for %.0f s (stuck in the kernel?); "
                "check them with `ps -g %d`",
                self.name,
                pgid,
                _KILL_WAIT_S,
                pgid,
            )

    async def _stop(self, grace_s: float) -> int | None:
        pid, exit_future = self._pid, self._exit
        if pid is not None and exit_future is not None and not exit_future.done():
            logger.info("stopping %s (pid %d)", self.name, pid)
            _signal_group(pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(exit_future), timeout=grace_s)
            except asyncio.TimeoutError:
                logger.warning("%s did not exit within %.1f s of SIGTERM; killing it", self.name, grace_s)
                _signal_group(pid, signal.SIGKILL)
        assert self._supervisor is not None
        bound = grace_s + 2 * _KILL_WAIT_S + _READER_WAIT_S + _CALLBACK_TIMEOUT_S
        done, _ = await asyncio.wait({self._supervisor}, timeout=bound)
        if not done:
            logger.error("supervision of %s did not end within %.0f s of stop()", self.name, bound)
        return self._returncode

    async def _call_on_exit(self, returncode: int) -> None:
        if self._on_exit is None:
            return
        try:
            result = self._on_exit(self, returncode)
            if inspect.isawaitable(result):
                await asyncio.wait_for(_as_coroutine(result), timeout=_CALLBACK_TIMEOUT_S)
        except asyncio.TimeoutError:
            logger.error(
                "on_exit callback of %s did not finish within %.0f s", self.name, _CALLBACK_TIMEOUT_S
            )
        except Exception:
            logger.exception("on_exit callback of %s failed", self.name)

    async def _sleep_unless_stopped(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; return True at once when stop() is called."""
        if self._stopping:
            return True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay)
        return self._stopping


# ---------------------------------------------------------------------------------- helpers
def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        logger.error("cannot signal process group %d: %s", pgid, exc)


async def _wait_group_gone(pgid: int, deadline: float) -> bool:
    interval = _POLL_S
    while group_has_live_members(pgid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 2, _POLL_MAX_S)  # each check may scan /proc: back off
    return True
