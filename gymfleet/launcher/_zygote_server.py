"""The zygote process: a pre-imported Python that forks server processes on request.

This module runs *inside* the zygote (forked from the launcher before it started any thread or event
loop, or started as ``python -m gymfleet.launcher._zygote_server``). It is single-threaded and
never runs an event loop, so every child it forks starts from a clean, already-imported interpreter.
The launcher side, the wire protocol and the guarantees are described in :mod:`gymfleet.launcher.zygote`.

Each child: ``setsid()`` (its own process group), ``PR_SET_PDEATHSIG=SIGTERM`` tied to the zygote (which
itself dies with the launcher and takes its children's groups down), stdout and stderr on the pipe the
launcher reads, stdin on ``/dev/null``, the listening sockets at the fd numbers the launcher gave, then
the environment, working directory, ``sys.path`` and ``sys.argv`` the exec path would have produced, and
``runpy``. Its exit status reaches the launcher as ``{"op": "exit", "pid", "returncode"}``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import importlib
import io
import json
import logging
import os
import random
import runpy
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from gymfleet.launcher.lifeline import die_with_parent, group_has_live_members

__all__ = ["MAX_MESSAGE", "PRELOAD", "preload", "serve", "set_cmdline"]

# Imported once in the zygote (missing optional ones are skipped): what every server would import.
PRELOAD = (
    "asyncio", "json", "uuid", "orjson", "yaml", "pydantic", "omegaconf", "aiohttp", "fastapi",
    "fastapi.responses", "starlette", "uvicorn", "uvicorn.lifespan.on", "uvicorn.protocols.http.h11_impl",
    "uvicorn.protocols.http.httptools_impl", "uvicorn.protocols.websockets.auto", "uvicorn.loops.auto",
    "uvloop", "httptools", "gymfleet.transport", "gymfleet.client", "gymfleet.wire", "gymfleet.config",
    "gymfleet.server", "gymfleet.server.runtime", "gymfleet.launcher.lifeline",
    # Imported lazily on the way to serving; found with a sys.modules diff at registration time.
    "pydantic.v1", "fastapi.telemetry._runtime", "encodings.idna", "stringprep", "antlr4.LL1Analyzer",
    "pkgutil",
)
MAX_MESSAGE = 1 << 20  # largest request (the child's environment dominates); SEQPACKET keeps boundaries
_MAX_FDS = 64
_STOP_GRACE_S = 2.0  # SIGTERM-to-SIGKILL for children still running when the zygote stops
_KILL_WAIT_S = 3.0
_POLL_MS = 1000  # the loop also wakes on every request and every SIGCHLD; this only bounds the wait
_SEND_TIMEOUT_S = 5.0  # how long a report waits for room in the launcher's socket buffer
_CHILD_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP, signal.SIGQUIT}
_CHILD_READY_S = 5.0  # how long the zygote waits for a new child to lead its own process group


class _Zygote:
    def __init__(self, sock: socket.socket, launcher_pid: int) -> None:
        self.sock = sock
        self.launcher_pid = launcher_pid
        self.children: dict[int, str] = {}  # pid (= its process group) -> server name
        self.stopping = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        # What the interpreter itself puts on sys.path (stdlib, site-packages): after a child's own entries.
        own = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        self.site_path = [p for p in sys.path[1:] if p not in own]

    # ------------------------------------------------------------------------------ main loop
    def run(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the launcher's to handle
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # only to wake the poll
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        self._send({"op": "ready", "pid": os.getpid()})
        while not self.stopping:
            events = dict(poller.poll(_POLL_MS))
            with contextlib.suppress(BlockingIOError):
                os.read(self.wake_r, 4096)
            self._reap()
            if os.getppid() != self.launcher_pid:  # belt and braces next to the death signal
                break
            if events.get(self.sock.fileno()) and not self._handle_request():
                break
        self._stop_children()

    def _on_term(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _handle_request(self) -> bool:
        """Serve one request; False when the launcher closed its end."""
        try:
            data, ancdata, flags, _ = self.sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(_MAX_FDS * 4))
        except (BlockingIOError, InterruptedError, TimeoutError):
            return True
        except OSError:
            return False
        fds: list[int] = []
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                fds.extend(memoryview(payload)[:usable].cast("i"))
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        request: dict[str, Any] = {}
        try:
            request = json.loads(data)
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise ValueError("the request or its file descriptors were cut off (too large)")
            if request.get("op") != "spawn":
                raise ValueError(f"unknown request {request.get('op')!r}")
            pid = self._fork(request, fds)
        except Exception as exc:  # a bad request fails that spawn, never the zygote
            self._send({"op": "failed", "id": request.get("id"), "error": f"{type(exc).__name__}: {exc}"})
        else:
            self.children[pid] = str(request.get("name"))
            self._send({"op": "spawned", "id": request["id"], "pid": pid})
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        return True

    def _fork(self, request: dict[str, Any], fds: list[int]) -> int:
        targets = [int(n) for n in request.get("fds", [])]
        if len(fds) != 1 + len(targets):
            raise ValueError(f"expected {1 + len(targets)} file descriptors, got {len(fds)}")
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()  # nothing buffered may be written twice
        # A signal for the child that arrives before it reset its handlers would hit the zygote's
        # handlers in its memory and be lost: keep them blocked until the child restored the defaults.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _CHILD_SIGNALS)
        # The launcher signals the child's group as soon as it knows the pid: answer only once the
        # group exists (the child closes its end of this pipe after setsid), as Popen returns after exec.
        ready_r, ready_w = os.pipe()
        try:
            try:
                pid = os.fork()
                if pid == 0:
                    try:
                        os.close(ready_r)
                        _child(self, request, fds[0], list(zip(fds[1:], targets, strict=True)), ready_w)
                    finally:
                        os._exit(1)  # _child never returns; nothing of the zygote's loop may run here
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
                os.close(ready_w)
            select.select([ready_r], [], [], _CHILD_READY_S)  # EOF: set up, or already dead
        finally:
            os.close(ready_r)
        return pid

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.pop(pid, None)
            self._send({"op": "exit", "pid": pid, "returncode": os.waitstatus_to_exitcode(status)})

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self.sock.send(json.dumps(message).encode())
        except TimeoutError:
            note = f"gymfleet zygote: the launcher did not read {message} in {_SEND_TIMEOUT_S} s\n"
            os.write(2, note.encode())
        except OSError:  # the launcher is gone: nobody to tell
            pass

    def _stop_children(self) -> None:
        """The launcher is gone or closed us: take every child's process group down, then exit."""
        groups = list(self.children)  # kept: a child reaped after SIGTERM may leave helpers for SIGKILL
        for sig, wait_s in ((signal.SIGTERM, _STOP_GRACE_S), (signal.SIGKILL, _KILL_WAIT_S)):
            groups = [pgid for pgid in groups if group_has_live_members(pgid)]
            for pgid in groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and any(group_has_live_members(g) for g in groups):
                select.select([self.wake_r], [], [], 0.02)
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 4096)
                self._reap()
        self._reap()


# ---------------------------------------------------------------------------------- the child
def _child(
    zygote: _Zygote, request: dict[str, Any], pipe_w: int, passed: list[tuple[int, int]], ready_w: int
) -> NoReturn:
    """Runs in the forked child: become the server process described by ``request``; never returns."""
    try:
        run = request["run"]
        env = {str(k): str(v) for k, v in request["env"].items()}
        zygote_pid = os.getppid()
        signal.set_wakeup_fd(-1)
        for sig in _CHILD_SIGNALS - {signal.SIGINT}:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())  # a pending SIGTERM now takes the default action
        os.setsid()
        if not die_with_parent(zygote_pid):
            os._exit(1)  # the zygote (so the launcher) is gone: no death signal would ever come
        os.close(ready_w)  # the zygote may now report our pid: killpg(pid) reaches us
        zygote.sock.close()
        os.close(zygote.wake_r)
        os.close(zygote.wake_w)
        _place_fds(pipe_w, passed)
        set_cmdline([str(request.get("argv0") or sys.executable), *_argv_tail(run)])
        os.environ.clear()
        os.environ.update(env)
        if request.get("cwd"):
            os.chdir(request["cwd"])
        _reset_interpreter(env)
        sys.path[:] = [_path_head(run), *_pythonpath(env), *zygote.site_path]
        importlib.invalidate_caches()
    except BaseException:
        with contextlib.suppress(Exception):
            os.write(2, f"gymfleet zygote: could not set up {request.get('name')!r}:\n".encode())
            os.write(2, traceback.format_exc().encode(errors="replace"))
        os._exit(1)
    _finish(_run(run, request.get("argv0") or sys.executable))


def set_cmdline(argv: Sequence[str]) -> None:
    """Show ``argv`` in ``/proc/self/cmdline`` (``ps``, ``pkill -f``) instead of the launcher's command line.

    A forked process keeps its parent's. Like setproctitle, this overwrites the original argument
    strings in place (Python keeps its own copies); what does not fit is cut off.
    """
    try:
        with open("/proc/self/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: fields 48 and 49 of stat(5)
        size = end - start
        if size <= 1:
            return
        text = b"\0".join(os.fsencode(a) for a in argv)[: size - 1]
        ctypes.memmove(start, text + b"\0" * (size - len(text)), size)
    except (OSError, ValueError, IndexError):
        pass


def _argv_tail(run: dict[str, Any]) -> list[str]:
    flag = {"module": ["-m"], "code": ["-c"]}.get(run["kind"], [])
    return [*flag, str(run["target"]), *(str(a) for a in run.get("args", []))]


def _place_fds(pipe_w: int, passed: list[tuple[int, int]]) -> None:
    """stdin from /dev/null, stdout and stderr into the pipe, each passed fd at its launcher-side number."""
    floor = max([3, *(target for _, target in passed)]) + 1
    # Move every received fd above all targets first, so no dup2 below clobbers one not yet placed.
    high = [(_dup_above(fd, floor), target) for fd, target in passed]
    pipe_high = _dup_above(pipe_w, floor)
    for fd, _ in passed:
        os.close(fd)
    os.close(pipe_w)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(pipe_high, 1)
    os.dup2(pipe_high, 2)
    os.close(pipe_high)
    for fd, target in high:
        os.dup2(fd, target, inheritable=True)  # like Popen(pass_fds=...): the server's children inherit it
        os.close(fd)


def _dup_above(fd: int, floor: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)


def _reset_interpreter(env: dict[str, str]) -> None:
    """Make the interpreter state what a fresh ``python`` with this environment would have."""
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    encoding, _, errors = (env.get("PYTHONIOENCODING") or "").partition(":")
    encoding = encoding or getattr(sys.__stdout__, "encoding", None) or "utf-8"
    stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding=encoding,
                             errors=errors or "strict")
    stdout = _writer(1, encoding, errors or "strict", unbuffered, line_buffering=False)
    stderr = _writer(2, encoding, errors or "backslashreplace", unbuffered, line_buffering=True)
    sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = stdin, stdout, stderr  # type: ignore[misc]
    sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
    random.seed()  # os.fork reseeds `random` too; said here so no shared stream can slip through
    atexit._clear()  # the launcher's exit handlers are not the server's
    atexit.register(logging.shutdown)
    _reset_logging()


def _writer(
    fd: int, encoding: str, errors: str, unbuffered: bool, *, line_buffering: bool
) -> io.TextIOWrapper:
    raw = io.FileIO(fd, "w", closefd=False)
    buffer: Any = raw if unbuffered else io.BufferedWriter(raw)
    return io.TextIOWrapper(buffer, encoding=encoding, errors=errors,
                            line_buffering=line_buffering and not unbuffered, write_through=unbuffered)


def _reset_logging() -> None:
    root = logging.getLogger()
    known = logging.Logger.manager.loggerDict.values()
    loggers = [root, *(item for item in known if isinstance(item, logging.Logger))]
    for item in loggers:
        item.handlers.clear()
        item.setLevel(logging.NOTSET)
        item.propagate = True
        item.disabled = False
    root.setLevel(logging.WARNING)
    logging.disable(logging.NOTSET)


def _path_head(run: dict[str, Any]) -> str:
    kind, target = run["kind"], run["target"]
    if kind == "path":
        return os.path.dirname(os.path.realpath(target))
    return os.getcwd() if kind == "module" else ""


def _pythonpath(env: dict[str, str]) -> list[str]:
    return [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]


def _run(run: dict[str, Any], executable: str) -> int:
    """Run the entry point as ``__main__``; return the exit code a ``python`` process would have."""
    kind, target, args = run["kind"], run["target"], [str(a) for a in run.get("args", [])]
    try:
        if kind == "path":
            if not os.path.exists(target):
                sys.stderr.write(f"{executable}: can't open file {os.path.abspath(target)!r}: "
                                 "[Errno 2] No such file or directory\n")
                return 2
            sys.argv = [target, *args]
            runpy.run_path(target, run_name="__main__")
        elif kind == "module":
            sys.argv = [target, *args]
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c", *args]
            main = type(sys)("__main__")
            sys.modules["__main__"] = main
            exec(compile(target, "<string>", "exec"), main.__dict__)
    except SystemExit as exc:
        return _exit_code(exc.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        _finish(None)  # like python: die of SIGINT, so the parent sees how it ended
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with contextlib.suppress(Exception):
        sys.stderr.write(f"{code}\n")
    return 1


def _finish(code: int | None) -> NoReturn:
    """What interpreter shutdown does, in order: join threads, exit handlers, flush; then exit."""
    with contextlib.suppress(BaseException):
        threading._shutdown()  # type: ignore[attr-defined]
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    if code is None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        code = 130
    os._exit(code)


# ---------------------------------------------------------------------------------- entry points
def preload(modules: Sequence[str] = PRELOAD) -> None:
    """Import what the servers will import, then freeze it so forks share those pages."""
    for name in modules:
        # Whatever fails here (missing, broken) fails again, visibly, in the server that imports it.
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    gc.collect()
    gc.freeze()  # the collector never touches these objects again: their pages stay shared with children


def serve(sock: socket.socket, launcher_pid: int, modules: Sequence[str] = PRELOAD) -> NoReturn:
    """The zygote's whole life: preload, serve spawn requests until the launcher goes, stop the children."""
    code = 0
    try:
        sock.settimeout(_SEND_TIMEOUT_S)  # reads only follow poll(); a send waits for a slow reader this long
        atexit._clear()  # exits are os._exit: nothing inherited may run here or in a child
        zygote = _Zygote(sock, launcher_pid)  # sys.path is read before preloading can change it
        preload(modules)
        zygote.run()
    except BaseException:
        with contextlib.suppress(Exception):
            os.write(2, ("gymfleet zygote failed:\n" + traceback.format_exc()).encode(errors="replace"))
        code = 1
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    os._exit(code)


def main(argv: Sequence[str]) -> NoReturn:
    """``python -m gymfleet.launcher._zygote_server FD LAUNCHER_PID MODULE,... [PADDING]``: exec kind."""
    fd, launcher_pid = int(argv[0]), int(argv[1])
    modules = [name for name in argv[2].split(",") if name] if len(argv) > 2 else PRELOAD
    os.setpgid(0, 0)  # signals meant for the launcher's group (Ctrl-C, killpg) are not ours
    if not die_with_parent(launcher_pid):
        os._exit(1)
    set_cmdline([sys.executable, "-m", "gymfleet.launcher._zygote_server", *argv[:2]])  # without the padding
    serve(socket.socket(fileno=fd), launcher_pid, modules)


if __name__ == "__main__":
    main(sys.argv[1:])
