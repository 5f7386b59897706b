"""A pre-forked "zygote": start server processes by forking an already-imported Python.

Every server is ``python app.py`` importing FastAPI, uvicorn, pydantic, aiohttp, omegaconf...: about a
second of imports each, all at once on a small machine. The zygote pays that once. ``gymfleet run``
imports what servers use (:func:`preload`; the head needs most of it anyway) and forks the zygote before
it starts any thread or event loop (:meth:`Zygote.start`, ``method="fork"``); where that is not possible
(the caller already runs threads or a loop) the zygote is started as ``python -m
gymfleet.launcher._zygote_server`` (``method="exec"``) and imports it all itself. Either way it freezes
what it imported (``gc.freeze``: the pages stay shared with every child) and waits.

Protocol (a ``SOCK_SEQPACKET`` socketpair, one JSON object per message):

* launcher -> zygote: ``{"op": "spawn", "id", "name", "run", "argv0", "cwd", "env", "fds"}`` with, by
  ``SCM_RIGHTS``, the write end of the output pipe the launcher reads and then the listening sockets,
  which the child gets at the fd numbers listed in ``fds`` (the numbers they have in the launcher, so
  ``GYMFLEET_LISTEN_FD`` means the same in both spawn modes);
* zygote -> launcher: ``{"op": "spawned", "id", "pid"}`` or ``{"op": "failed", "id", "error"}``, and
  for every child, later, ``{"op": "exit", "pid", "returncode"}`` (the zygote reaps its children).

Guarantees: each child leads its own process group (``killpg`` works as with exec), dies by SIGTERM
when the zygote dies, and the zygote dies with the launcher (``PR_SET_PDEATHSIG``) after taking its
children's groups down (SIGTERM, then SIGKILL after 2 s). The zygote sits in its own process group,
so Ctrl-C and signals to the launcher's group reach only the launcher, which stops servers in order.
Children see the environment, working directory, ``sys.path`` and ``sys.argv`` of the exec path, with
one exception: ``GYMFLEET_PARENT_PID`` names their real parent, the zygote, which is what the parent
watch needs. Random state is re-seeded in each child; string hashing shares the zygote's seed.

What a child runs is read from disk at each start (its entry point and its own modules), but what the
zygote preloaded (gymfleet, FastAPI, ...) is the code of launch time: after upgrading those, restart the
launcher, or use ``spawn_method: exec``. A child ends with ``os._exit`` after running its exit handlers
(no interpreter teardown), which also makes stopping a server faster than with exec.
"""

from __future__ import annotations

import array
import asyncio
import atexit
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from gymfleet.errors import ConfigError, LauncherError
from gymfleet.launcher._zygote_server import MAX_MESSAGE, PRELOAD, preload, serve, set_cmdline
from gymfleet.launcher.lifeline import die_with_parent

__all__ = [
    "PRELOAD",
    "SPAWN_METHOD_ENV",
    "Zygote",
    "ZygoteChild",
    "ZygoteError",
    "close_default",
    "default_zygote",
    "preload",
    "resolve_spawn_method",
    "set_default",
    "start_default",
    "zygote_supported",
]

logger = logging.getLogger("gymfleet.launcher")

SPAWN_METHOD_ENV = "GYMFLEET_SPAWN_METHOD"
SpawnMethod = Literal["zygote", "exec"]

_SERVER_MODULE = "gymfleet.launcher._zygote_server"
_PADDING = " " * 1024
_SOCKET_TIMEOUT_S = 5.0  # a send waits this long for room; the reader wakes this often when idle
_SPAWN_TIMEOUT_S = 30.0  # a zygote started by exec may still be importing when the first request comes
_ZYGOTE_EXIT_S = 8.0  # after its socket closes the zygote stops its children (<= 5 s), then exits
_ORPHAN_WAIT_S = 5.0  # how long children of a dead zygote get to die of their death signal


class ZygoteError(LauncherError):
    """The zygote cannot start this process (gone, unsupported here, or refused the request).

    Callers fall back to starting the process with exec.
    """


@dataclass
class ZygoteChild:
    """A process the zygote started: its pid, the read end of its output, its exit code to come."""

    pid: int
    output: BinaryIO
    exit: asyncio.Future[int]


@dataclass
class _Waiter:
    loop: asyncio.AbstractEventLoop
    started: asyncio.Future[int]
    exit: asyncio.Future[int]


def zygote_supported() -> bool:
    """True where a zygote can work: Linux (fork, ``SCM_RIGHTS``, ``PR_SET_PDEATHSIG``)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SOCK_SEQPACKET") and hasattr(os, "fork")


def resolve_spawn_method(configured: str | None = None, config_value: Any = None) -> SpawnMethod:
    """How servers start: ``configured`` (API/CLI) > ``$GYMFLEET_SPAWN_METHOD`` > config > ``zygote``.

    ``zygote`` becomes ``exec`` where no zygote can work (see :func:`zygote_supported`).

    Raises:
        ConfigError: The value is neither ``zygote`` nor ``exec``.
    """
    raw = configured or os.environ.get(SPAWN_METHOD_ENV) or config_value or "zygote"
    value = str(raw).strip().lower()
    if value not in ("zygote", "exec"):
        raise ConfigError(
            f"Unknown spawn method {raw!r} (from spawn_method or ${SPAWN_METHOD_ENV}); use 'zygote' (fork "
            "servers from a pre-imported process, the default) or 'exec' (a fresh python per server)."
        )
    return "zygote" if value == "zygote" and zygote_supported() else "exec"


class Zygote:
    """The launcher's handle on a zygote process. Create it with :meth:`start`."""

    def __init__(
        self, sock: socket.socket, pid: int, *, popen: subprocess.Popen[bytes] | None = None
    ) -> None:
        self.pid = pid
        self.executable = sys.executable
        self._sock = sock
        self._popen = popen
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # guards the two maps below and the socket's send side
        self._waiting: dict[int, _Waiter] = {}  # request id -> waiter, until "spawned" / "failed"
        self._children: dict[int, _Waiter] = {}  # pid -> waiter, until "exit"
        self._alive = True
        self._closing = False
        self._reader = threading.Thread(target=self._read_loop, name=f"gymfleet-zygote-{pid}", daemon=True)
        self._reader.start()

    @classmethod
    def start(
        cls, method: Literal["auto", "fork", "exec"] = "auto", *, preload: Sequence[str] = PRELOAD
    ) -> Zygote:
        """Start a zygote.

        Args:
            method: ``fork`` this process (only while it runs a single thread and no event loop: call it
                early, right after the imports), ``exec`` a new Python, or ``auto``: fork when that is
                safe, else exec.
            preload: Modules the zygote imports before it forks anything (default :data:`PRELOAD`, what
                gymfleet servers use); ones that fail to import are skipped.

        Raises:
            ZygoteError: No zygote can run here, or ``fork`` was asked for where it is not safe.
        """
        if not zygote_supported():
            raise ZygoteError(
                f"a zygote needs Linux (fork, SCM_RIGHTS, PR_SET_PDEATHSIG); this is {sys.platform}"
            )
        unsafe = _fork_unsafe_reason()
        if method == "auto":
            method = "exec" if unsafe else "fork"
        elif method == "fork" and unsafe:
            raise ZygoteError(f"cannot fork a zygote here: {unsafe}. Fork it earlier, or use method='exec'.")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (ours, theirs):
            for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                with contextlib.suppress(OSError):  # the kernel caps it; requests are far smaller
                    end.setsockopt(socket.SOL_SOCKET, option, MAX_MESSAGE)
        launcher_pid = os.getpid()
        popen = None
        if method == "fork":
            pid = os.fork()
            if pid == 0:  # the zygote
                try:
                    ours.close()
                    os.setpgid(0, 0)  # Ctrl-C and killpg of the launcher's group are not for us
                    if not die_with_parent(launcher_pid):
                        os._exit(1)
                    set_cmdline([sys.executable, "-m", _SERVER_MODULE, f"(zygote of {launcher_pid})"])
                except BaseException:
                    os._exit(1)
                serve(theirs, launcher_pid, preload)
        else:
            repo_root = str(Path(__file__).resolve().parents[2])
            pythonpath = os.pathsep.join(p for p in (repo_root, os.environ.get("PYTHONPATH", "")) if p)
            try:
                popen = subprocess.Popen(
                    # The padding reserves room for the children's command lines (see set_cmdline).
                    [sys.executable, "-m", _SERVER_MODULE, str(theirs.fileno()), str(launcher_pid),
                     ",".join(preload), _PADDING],
                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONPATH": pythonpath},
                )
            except OSError as exc:
                ours.close()
                raise ZygoteError(f"could not start the zygote ({sys.executable}): {exc}") from exc
            finally:
                theirs.close()
            pid = popen.pid
        theirs.close()
        ours.settimeout(_SOCKET_TIMEOUT_S)
        logger.debug("started the zygote (pid %d, %s)", pid, method)
        return cls(ours, pid, popen=popen)

    # ------------------------------------------------------------------------------ use
    @property
    def alive(self) -> bool:
        """False once the zygote exited or was closed; spawns then fail with :class:`ZygoteError`."""
        return self._alive and not self._closing

    def can_run(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> bool:
        """True if ``argv`` is ``<this python> script.py|-m module|-c code [args]``, what a zygote runs."""
        return self._run_spec(argv, env) is not None

    async def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str],
        pass_fds: Sequence[int] = (),
        timeout_s: float = _SPAWN_TIMEOUT_S,
    ) -> ZygoteChild:
        """Fork a child that runs ``argv`` as the exec path would; return once it exists.

        Raises:
            ZygoteError: The zygote is gone, cannot run ``argv``, or did not answer in ``timeout_s``.
            OSError: ``cwd`` is not a directory (the exec path fails the same way).
        """
        run = self._run_spec(argv, env)
        if run is None:
            raise ZygoteError(f"the zygote runs '<python> script|-m module|-c code' only, not {list(argv)!r}")
        if not self.alive:
            raise ZygoteError(f"the zygote (pid {self.pid}) is not running")
        cwd_text = os.fspath(cwd) if cwd is not None else None
        if cwd_text is not None and not os.path.isdir(cwd_text):
            raise NotADirectoryError(2, "No such directory", cwd_text)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop, loop.create_future(), loop.create_future())
        request_id = next(self._ids)
        message = json.dumps({
            "op": "spawn", "id": request_id, "name": name, "run": run, "argv0": argv[0], "cwd": cwd_text,
            "env": dict(env), "fds": [int(fd) for fd in pass_fds],
        }).encode()
        if len(message) > MAX_MESSAGE // 2:
            raise ZygoteError(f"the request to start {name!r} is {len(message)} bytes (too much environment)")
        read_end, write_end = os.pipe()
        try:
            with self._lock:
                self._waiting[request_id] = waiter
                fds = array.array("i", [write_end, *pass_fds])
                self._sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            pid = await asyncio.wait_for(asyncio.shield(waiter.started), timeout_s)
        except BaseException as exc:
            with self._lock:
                self._waiting.pop(request_id, None)  # a late "spawned" is then killed, not leaked
                started = [pid for pid, other in self._children.items() if other is waiter]
            for pid in started:  # spawned, but we were cancelled before we heard: nobody would supervise it
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
            os.close(read_end)
            if isinstance(exc, OSError):
                raise ZygoteError(f"could not send the spawn request to the zygote: {exc}") from exc
            if isinstance(exc, asyncio.TimeoutError):
                raise ZygoteError(
                    f"the zygote (pid {self.pid}) did not start {name!r} within {timeout_s:.0f} s"
                ) from exc
            raise
        finally:
            os.close(write_end)  # the child (and the zygote, until it forked) hold their own copies
        return ZygoteChild(pid, open(read_end, "rb", buffering=0), waiter.exit)

    def close(self, timeout_s: float = _ZYGOTE_EXIT_S + 1.0) -> None:
        """Stop the zygote (it takes children still running down with it) and reap it. Idempotent."""
        self._closing = True
        with contextlib.suppress(OSError):  # EOF for the zygote; it still reports its children's exits
            self._sock.shutdown(socket.SHUT_WR)
        if self._reader is not threading.current_thread():
            self._reader.join(timeout_s)
        if self._reader.is_alive():
            logger.error("the zygote (pid %d) did not stop within %.0f s; killing it", self.pid, timeout_s)
            self._kill_and_reap()

    # ------------------------------------------------------------------------------ internals
    def _run_spec(self, argv: Sequence[str], env: Mapping[str, str] | None) -> dict[str, Any] | None:
        if len(argv) < 2:
            return None
        program = os.fspath(argv[0])
        found = program if os.sep in program else shutil.which(program, path=(env or os.environ).get("PATH"))
        if found is None or os.path.abspath(found) != os.path.abspath(self.executable):
            return None
        first, rest = os.fspath(argv[1]), [os.fspath(a) for a in argv[2:]]
        if first in ("-m", "-c") and rest:
            return {"kind": "module" if first == "-m" else "code", "target": rest[0], "args": rest[1:]}
        if first.startswith("-"):
            return None  # interpreter options change the interpreter: only a fresh one can honour them
        return {"kind": "path", "target": first, "args": rest}

    def _read_loop(self) -> None:
        try:
            while True:
                try:
                    data = self._sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                try:
                    self._dispatch(json.loads(data))
                except Exception:
                    logger.exception("bad message from the zygote (pid %d): %r", self.pid, data[:200])
        finally:
            self._lost()

    def _dispatch(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "spawned":
            pid = int(message["pid"])
            with self._lock:
                waiter = self._waiting.pop(int(message["id"]), None)
                if waiter is not None:
                    self._children[pid] = waiter
            if waiter is None:  # its caller gave up waiting: nobody supervises it, so it must not live
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
            else:
                _resolve(waiter.loop, waiter.started, pid)
        elif op == "failed":
            with self._lock:
                waiter = self._waiting.pop(int(message["id"]), None)
            if waiter is not None:
                error = ZygoteError(f"the zygote could not start it: {message.get('error')}")
                _fail(waiter.loop, waiter.started, error)
        elif op == "exit":
            with self._lock:
                waiter = self._children.pop(int(message["pid"]), None)
            if waiter is not None:
                _resolve(waiter.loop, waiter.exit, int(message["returncode"]))

    def _lost(self) -> None:
        """The socket closed: the zygote exited (or is exiting). Reap it; settle every open future."""
        self._alive = False
        with self._lock:
            waiting, self._waiting = list(self._waiting.values()), {}
            orphans, self._children = dict(self._children), {}
        if not self._closing:
            logger.error("the zygote (pid %d) exited unexpectedly; %d server(s) lose their parent and "
                         "stop; servers start with exec from now on", self.pid, len(orphans))
        for waiter in waiting:
            _fail(waiter.loop, waiter.started, ZygoteError(f"the zygote (pid {self.pid}) exited"))
        self._reap_zygote()
        deadline = time.monotonic() + _ORPHAN_WAIT_S
        for pid, waiter in orphans.items():  # their death signal (SIGTERM) is on its way: see them go
            while _is_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            code = -signal.SIGTERM
            if _is_alive(pid):
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                code = -signal.SIGKILL
            # The real status went to init, not to us. What is left of the group, the supervisor clears.
            _resolve(waiter.loop, waiter.exit, code)
        with contextlib.suppress(OSError):
            self._sock.close()

    def _reap_zygote(self) -> None:
        deadline = time.monotonic() + _ZYGOTE_EXIT_S
        while time.monotonic() < deadline:
            if self._poll_exit():
                return
            time.sleep(0.01)
        logger.error("the zygote (pid %d) did not exit within %.0f s; killing it", self.pid, _ZYGOTE_EXIT_S)
        self._kill_and_reap()

    def _poll_exit(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is not None
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return True
        return pid != 0

    def _kill_and_reap(self) -> None:
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while not self._poll_exit() and time.monotonic() < deadline:
            time.sleep(0.01)


def _resolve(loop: asyncio.AbstractEventLoop, future: asyncio.Future[int], value: int) -> None:
    def settle() -> None:
        if not future.done():
            future.set_result(value)

    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
        loop.call_soon_threadsafe(settle)


def _fail(loop: asyncio.AbstractEventLoop, future: asyncio.Future[int], error: BaseException) -> None:
    def settle() -> None:
        if not future.done():
            future.set_exception(error)

    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle)


def _is_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return False
    return raw[raw.rfind(b")") + 2 :][:1] not in (b"Z", b"X")


def _fork_unsafe_reason() -> str | None:
    if threading.active_count() > 1:
        return f"{threading.active_count()} threads are running"
    if threading.current_thread() is not threading.main_thread():
        return "not on the main thread"
    if asyncio.events._get_running_loop() is not None:
        return "an event loop is running"
    return None


# ---------------------------------------------------------------------------------- the default zygote
_default: Zygote | None = None
_atexit_registered = False


def start_default(
    method: Literal["auto", "fork", "exec"] = "auto", *, preload: Sequence[str] = PRELOAD
) -> Zygote | None:
    """Start this process's zygote (used by :class:`ManagedProcess` with ``spawn="auto"``).

    Call it early, before threads and event loops, to get the cheap ``fork`` kind. Returns the running
    one if there is one; None (with a warning) where no zygote can run.
    """
    global _default, _atexit_registered
    if _default is not None and _default.alive:
        return _default
    try:
        _default = Zygote.start(method, preload=preload)
    except ZygoteError as exc:
        logger.warning("servers start with exec: %s", exc)
        _default = None
        return None
    if not _atexit_registered:
        atexit.register(close_default)
        _atexit_registered = True
    return _default


def default_zygote() -> Zygote | None:
    """This process's running zygote, if one was started with :func:`start_default`."""
    return _default if _default is not None and _default.alive else None


def set_default(zygote: Zygote | None) -> Zygote | None:
    """Make ``zygote`` this process's default (None: no default); return the previous one, not closed."""
    global _default
    previous, _default = _default, zygote
    return previous


def close_default() -> None:
    """Stop this process's zygote, if any."""
    global _default
    zygote, _default = _default, None
    if zygote is not None:
        zygote.close()
