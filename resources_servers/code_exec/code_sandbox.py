"""Run candidate Python against unit tests in a sandboxed subprocess (used in a Ray task or locally).

The sandbox is one ``python -I`` process in a fresh temp directory (its cwd, removed after), fed the code and
the tests on stdin. Before any candidate code runs, the harness

* sets rlimits: CPU seconds, address space, open files, processes, file size, no core dumps;
* drops to ``nobody`` when started as root (so the process limit and file permissions mean something),
  if ``nobody`` can read the interpreter (a Python installed under ``/root`` cannot be: the sandbox then
  stays root inside its network namespace, with the rlimits; the summary says ``"user": "root"``);
* dies with its parent (``PR_SET_PDEATHSIG``), so killing the worker that started it ends it too;
* blocks the network: the process runs in a new network namespace (``unshare --net``: no interface but a
  down loopback) when that works here; and an audit hook refuses socket creation (unix sockets too, which
  no network namespace covers), subprocesses, ``fork`` and ``ctypes`` loading. Without ``unshare`` the hook
  is all there is: a tripwire for honest mistakes, not a security boundary.

The parent enforces a wall-clock timeout and kills the sandbox's whole process group. Results come back on a
private copy of stdout, tagged with a per-run nonce; what the candidate prints goes to ``output.txt``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

__all__ = ["DEFAULT_LIMITS", "isolation_mode", "run_sandbox", "run_sandbox_async"]

DEFAULT_LIMITS: dict[str, Any] = {
    "timeout_s": 5.0,  # wall clock
    "cpu_s": 5,
    "memory_mb": 512,
    "max_files": 64,
    "max_processes": 64,
    "max_file_mb": 16,
    "network": "auto",  # auto | unshare | audit
    "audit_hook": True,  # with unshare too: unix sockets (docker, raylet) are outside any network namespace
}
NOBODY = 65534

HARNESS = r"""
import ctypes, json, os, resource, signal, sys
spec = json.loads(sys.stdin.read())
answers = os.fdopen(os.dup(1), "w")
capture = os.open("output.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.dup2(capture, 1)
os.dup2(capture, 2)
os.close(capture)
limits = spec["limits"]
def _limit(kind, value):
    resource.setrlimit(kind, (value, value))
_limit(resource.RLIMIT_CORE, 0)
_limit(resource.RLIMIT_CPU, int(limits["cpu_s"]))
_limit(resource.RLIMIT_AS, int(limits["memory_mb"]) * 2**20)
_limit(resource.RLIMIT_FSIZE, int(limits["max_file_mb"]) * 2**20)
_limit(resource.RLIMIT_NOFILE, int(limits["max_files"]))
if spec["drop_to"] is not None and os.geteuid() == 0:
    os.chown("output.txt", spec["drop_to"], spec["drop_to"])
    os.setgroups([])
    os.setgid(spec["drop_to"])
    os.setuid(spec["drop_to"])
_limit(resource.RLIMIT_NPROC, int(limits["max_processes"]))
ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG, after setuid (which clears it)
if os.getppid() != spec["parent_pid"]:
    os._exit(3)  # the parent died before the line above
if spec["audit"]:
    _BLOCKED = frozenset((
        "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto",
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
        "pty.spawn", "ctypes.dlopen", "ctypes.dlsym",
    ))
    def _audit(event, args, _blocked=_BLOCKED):
        if event in _blocked:
            raise PermissionError("sandbox: " + event + " is not allowed (no network, no subprocesses)")
    sys.addaudithook(_audit)
code, tests, nonce = spec["code"], spec["tests"], spec["nonce"]
del spec
namespace = {"__name__": "__main__"}
results = []
try:
    exec(compile(code, "solution.py", "exec"), namespace)
    load_error = None
except BaseException as exc:
    load_error = "solution failed to load: " + type(exc).__name__ + ": " + str(exc)[:300]
for index, test in enumerate(tests):
    if load_error is not None:
        results.append({"passed": False, "error": load_error})
        continue
    try:
        exec(compile(test, "test_%d" % index, "exec"), namespace)
        results.append({"passed": True, "error": None})
    except BaseException as exc:
        results.append({"passed": False, "error": (type(exc).__name__ + ": " + str(exc))[:300]})
for stream in (sys.stdout, sys.stderr):
    try:
        stream.flush()
    except BaseException:
        pass
answers.write(nonce + json.dumps(results) + "\n")
answers.flush()
os._exit(0)
"""

_isolation_cache: dict[str, list[str] | None] = {}


def _works(argv: list[str]) -> bool:
    try:
        return subprocess.run([*argv, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def isolation_mode(network: str = "auto") -> tuple[str, list[str]]:
    """(``unshare`` | ``audit``, command prefix) for ``network`` auto | unshare | audit (probed once)."""
    if network == "audit":
        return "audit", []
    if "prefix" not in _isolation_cache:
        prefix = None
        unshare = shutil.which("unshare")
        if unshare:
            for candidate in ([unshare, "--net", "--"], [unshare, "--net", "--map-root-user", "--"]):
                if _works(candidate):
                    prefix = candidate
                    break
        _isolation_cache["prefix"] = prefix
    prefix = _isolation_cache["prefix"]
    if prefix is None:
        if network == "unshare":
            raise RuntimeError(
                "network isolation 'unshare' was asked for, but `unshare --net` does not work here "
                "(needs root or user namespaces); use network: auto or audit"
            )
        return "audit", []
    return "unshare", prefix


def _readable_by_others() -> bool:
    """Can ``nobody`` run this interpreter (every directory up to its stdlib searchable by others)?"""
    if "readable" not in _isolation_cache:
        import stat
        import sysconfig

        ok = True
        for root in (sysconfig.get_paths()["stdlib"], os.path.dirname(os.path.realpath(sys.executable))):
            path = os.path.realpath(root)
            while ok and path not in ("/", ""):
                ok = bool(os.stat(path).st_mode & stat.S_IXOTH)
                path = os.path.dirname(path)
        _isolation_cache["readable"] = [] if ok else None
    return _isolation_cache["readable"] is not None


def _prepare(code: str, tests: list[str], limits: dict[str, Any]) -> tuple[str, list[str], bytes, str, str]:
    merged = {**DEFAULT_LIMITS, **{k: v for k, v in limits.items() if v is not None}}
    isolation, prefix = isolation_mode(str(merged["network"]))
    workdir = tempfile.mkdtemp(prefix="gfsandbox-")
    drop_to = (
        NOBODY if os.geteuid() == 0 and "--map-root-user" not in prefix and _readable_by_others() else None
    )
    if drop_to is not None:
        os.chown(workdir, drop_to, drop_to)
    harness = os.path.join(workdir, "harness.py")
    with open(harness, "w") as fh:
        fh.write(HARNESS)
    nonce = secrets.token_hex(16)
    spec = {
        "code": code,
        "tests": list(tests),
        "nonce": nonce,
        "limits": merged,
        "drop_to": drop_to,
        "parent_pid": os.getpid(),
        "audit": isolation == "audit" or bool(merged["audit_hook"]),
    }
    argv = [*prefix, sys.executable, "-I", harness]
    return workdir, argv, json.dumps(spec).encode(), nonce, isolation


def _env(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}


def _summarize(
    stdout: bytes,
    returncode: int | None,
    timed_out: bool,
    nonce: str,
    workdir: str,
    isolation: str,
    duration: float,
    timeout_s: float,
) -> dict[str, Any]:
    output = ""
    with contextlib.suppress(OSError):
        with open(os.path.join(workdir, "output.txt"), errors="replace") as fh:
            output = fh.read()[-2000:]
    results: list[dict[str, Any]] | None = None
    for line in stdout.decode(errors="replace").splitlines():
        if line.startswith(nonce):
            results = json.loads(line[len(nonce) :])
    if timed_out:
        status = "timeout"
    elif results is None:
        status = "crashed"  # killed by an rlimit (CPU: SIGXCPU/SIGKILL, memory), or os._exit before the tests
    else:
        status = "passed" if all(r["passed"] for r in results) else "failed"
    return {
        "status": status,
        "passed": sum(1 for r in results or [] if r["passed"]),
        "total": len(results) if results is not None else None,
        "tests": results or [],
        "returncode": returncode,
        "output_tail": output,
        "isolation": isolation,
        "user": "root"
        if os.geteuid() == 0 and not _readable_by_others()
        else "nobody"
        if os.geteuid() == 0
        else "self",
        "duration_s": round(duration, 4),
        "timeout_s": timeout_s,
    }


def run_sandbox(code: str, tests: list[str], limits: dict[str, Any]) -> dict[str, Any]:
    """Run ``code``, then each test snippet, in a sandbox (blocking); return a summary dict."""
    workdir, argv, spec, nonce, isolation = _prepare(code, tests, limits)
    timeout_s = float(limits.get("timeout_s") or DEFAULT_LIMITS["timeout_s"])
    start = time.monotonic()
    timed_out = False
    try:
        proc = subprocess.Popen(
            argv,
            cwd=workdir,
            env=_env(workdir),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            stdout, _ = proc.communicate(spec, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            stdout, _ = proc.communicate(timeout=5)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # anything the candidate left in its group
        return _summarize(
            stdout, proc.returncode, timed_out, nonce, workdir, isolation, time.monotonic() - start, timeout_s
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def run_sandbox_async(code: str, tests: list[str], limits: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_sandbox` on the event loop (an asyncio subprocess: no thread, no pool)."""
    workdir, argv, spec, nonce, isolation = _prepare(code, tests, limits)
    timeout_s = float(limits.get("timeout_s") or DEFAULT_LIMITS["timeout_s"])
    start = time.monotonic()
    timed_out = False
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=workdir,
            env=_env(workdir),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            stdout, _ = await asyncio.wait_for(proc.communicate(spec), timeout_s)
        except asyncio.TimeoutError:
            timed_out = True
            stdout = b""
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
        return _summarize(
            stdout, proc.returncode, timed_out, nonce, workdir, isolation, time.monotonic() - start, timeout_s
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
