"""The zygote: servers forked from a pre-imported Python act like exec'd ones and die with the launcher."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from gymfleet.errors import ConfigError, ServerStartupError
from gymfleet.launcher import zygote as zygote_module
from gymfleet.launcher.process import ManagedProcess, ProcessState, RestartPolicy
from gymfleet.launcher.zygote import Zygote, ZygoteError, resolve_spawn_method
from tests.launcher.launcher_helpers import (
    SCRIPTS,
    Cleanup,
    child_argv,
    is_alive,
    quiet_log,
    read_pidfile,
    script_argv,
    wait_until,
)

pytestmark = pytest.mark.skipif(not zygote_module.zygote_supported(), reason="the zygote needs Linux")

FAST = RestartPolicy(max_restarts=2, window_s=60.0, backoff_initial_s=0.05, backoff_max_s=0.1)


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    # pytest runs threads and event loops, so the fork kind is not safe here: a zygote started by exec.
    started = Zygote.start("exec")
    try:
        yield started
    finally:
        started.close()
    assert not is_alive(started.pid)


def ppid_of(pid: int) -> int:
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    return int(raw[raw.rfind(b")") + 2 :].split()[1])


async def run_probe(
    spawn: Zygote | Literal["exec"],
    tmp_path: Path,
    extra_env: dict[str, str] | None = None,
    pass_fds: list[int] | None = None,
) -> dict:
    env = {**os.environ, "GYMFLEET_PROBE": "1", "PYTHONPATH": "relative/entry", **(extra_env or {})}
    process = ManagedProcess(
        "probe", script_argv("probe.py", "one", "two"), cwd=tmp_path, env=env, pass_fds=pass_fds or [],
        log=quiet_log("probe"), spawn=spawn,
    )
    await process.start()
    assert await process.wait(timeout_s=10) == 0
    lines = process.log.last_lines()
    assert lines[-1] == "to stderr", lines
    return json.loads(lines[0])


async def test_a_forked_server_sees_what_an_execd_one_sees(zygote: Zygote, tmp_path: Path) -> None:
    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        fds = [first.fileno(), second.fileno()]
        extra_env = {"PROBE_FDS": ",".join(map(str, fds))}
        execd = await run_probe("exec", tmp_path, extra_env, fds)
        forked = await run_probe(zygote, tmp_path, extra_env, fds)
        assert execd["fds"] == {str(fds[0]): first.getsockname()[1], str(fds[1]): second.getsockname()[1]}
    same = ("argv", "path", "cwd", "env", "leads_group", "stdin", "stdout", "stderr", "fds", "main", "file")
    for key in (*same, "cmdline"):
        assert forked[key] == execd[key], key
    assert execd["path"][:2] == [str(SCRIPTS), str(tmp_path / "relative" / "entry")]
    assert execd["ppid"] == int(execd["parent_pid_env"]) == os.getpid()
    assert forked["ppid"] == int(forked["parent_pid_env"]) == zygote.pid  # what the parent watch follows
    assert forked["random"] != execd["random"]


async def test_children_get_their_own_random_state(zygote: Zygote, tmp_path: Path) -> None:
    first = await run_probe(zygote, tmp_path)
    second = await run_probe(zygote, tmp_path)
    assert first["random"] != second["random"]


async def test_exit_codes_and_errors_reach_the_launcher(zygote: Zygote, tmp_path: Path) -> None:
    cases = [
        ("import sys; sys.exit(7)", 7, None),
        ("raise ValueError('boom')", 1, "ValueError: boom"),
        ("raise SystemExit('a message')", 1, "a message"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", -9, None),
        ("raise KeyboardInterrupt", -2, "KeyboardInterrupt"),
    ]
    for code, expected, last in cases:
        process = ManagedProcess("c", [sys.executable, "-c", code], log=quiet_log("c"), spawn=zygote)
        await process.start()
        assert await process.wait(timeout_s=10) == expected, code
        if last is not None:
            assert process.log.last_lines()[-1] == last, process.log.last_lines()
    argv = [sys.executable, str(tmp_path / "nope.py")]
    missing = ManagedProcess("m", argv, log=quiet_log("m"), spawn=zygote)
    await missing.start()
    assert await missing.wait(timeout_s=10) == 2
    assert "can't open file" in missing.log.last_lines()[-1]


async def test_output_stop_and_group(zygote: Zygote, tmp_path: Path, cleanup: Cleanup) -> None:
    pidfile = tmp_path / "pids.json"
    process = cleanup.process(
        ManagedProcess(
            "srv", child_argv("--lines", "2", "--grandchild", "--pidfile", str(pidfile)),
            log=quiet_log("srv"), spawn=zygote,
        )
    )
    await process.start()
    info = await read_pidfile(pidfile)
    cleanup.pid(info["grandchild"])
    assert info["pgid"] == info["pid"] == process.pid and ppid_of(process.pid) == zygote.pid
    assert process.log.last_lines() == ["line 0", "line 1"]
    started = time.monotonic()
    assert await process.stop(5.0) == -15
    assert time.monotonic() - started < 2.0
    assert not is_alive(info["pid"]) and not is_alive(info["grandchild"])
    assert not Path(f"/proc/{info['pid']}").exists(), "the zygote did not reap its child"


async def test_stop_right_after_start_is_not_lost(zygote: Zygote, cleanup: Cleanup) -> None:
    # The pid is known before the child reset the zygote's signal handlers: SIGTERM must still work.
    for _ in range(5):
        process = cleanup.process(ManagedProcess("srv", child_argv(), log=quiet_log("srv"), spawn=zygote))
        await process.start()
        assert await process.stop(3.0) == -15


def started_by(log_file: Path) -> list[str]:
    """How each incarnation was started, from the launcher's notes in the log file."""
    notes = [line for line in log_file.read_text().splitlines() if "] started pid " in line]
    return [line.split("(", 1)[1].split(")", 1)[0] for line in notes]


async def test_restarts_go_through_the_zygote(zygote: Zygote, tmp_path: Path, cleanup: Cleanup) -> None:
    codes: list[int] = []
    process = cleanup.process(
        ManagedProcess(
            "flaky", child_argv("--exit-after", "0.2", "--code", "1"),
            log=cleanup.log(quiet_log("flaky", log_dir=tmp_path)), restart=FAST, spawn=zygote,
            on_exit=lambda proc, code: codes.append(code),
        )
    )
    await process.start()
    assert process.pid is not None and ppid_of(process.pid) == zygote.pid
    assert await process.wait(timeout_s=10) == 1
    assert process.state is ProcessState.FAILED and process.restarts == 2 and codes == [1, 1, 1]
    assert started_by(tmp_path / "flaky.log") == ["zygote"] * 3


async def test_the_inherited_socket_keeps_its_port_across_restarts(
    zygote: Zygote, tmp_path: Path, cleanup: Cleanup
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port, fd = sock.getsockname()[1], sock.fileno()
        process = cleanup.process(
            ManagedProcess("echo", child_argv("--echo-fd", str(fd)), pass_fds=[fd],
                           log=cleanup.log(quiet_log("echo", log_dir=tmp_path)), restart=FAST, spawn=zygote)
        )
        await process.start()
        pids = []
        for word in (b"hello", b"again"):
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            writer.write(word)
            await writer.drain()
            echoed, pid = (await asyncio.wait_for(reader.read(), 5)).split()
            writer.close()
            await writer.wait_closed()
            assert echoed == word
            pids.append(int(pid))
        assert pids[0] != pids[1]
        assert set(started_by(tmp_path / "echo.log")) == {"zygote"}


async def test_what_the_zygote_cannot_run_starts_with_exec(zygote: Zygote, tmp_path: Path) -> None:
    assert zygote.can_run([sys.executable, "app.py"]) and zygote.can_run([sys.executable, "-m", "json.tool"])
    assert not zygote.can_run([sys.executable, "-u", "app.py"])  # interpreter options need a fresh one
    assert not zygote.can_run(["/bin/sh", "-c", "true"]) and not zygote.can_run([sys.executable])
    process = ManagedProcess("sh", ["/bin/sh", "-c", "echo $PPID"], log=quiet_log("sh"), spawn=zygote)
    await process.start()
    assert await process.wait(timeout_s=5) == 0
    assert process.log.last_lines() == [str(os.getpid())]
    with pytest.raises(ServerStartupError, match="working directory"):
        await ManagedProcess(
            "bad", child_argv(), cwd=tmp_path / "missing", log=quiet_log("b"), spawn=zygote
        ).start()


async def test_a_dead_zygote_stops_its_children_and_restarts_fall_back_to_exec(
    tmp_path: Path, cleanup: Cleanup
) -> None:
    doomed = Zygote.start("exec", preload=())
    try:
        pidfile = tmp_path / "pids.json"
        process = cleanup.process(
            ManagedProcess("srv", child_argv("--grandchild", "--pidfile", str(pidfile)), log=quiet_log("srv"),
                           restart=FAST, spawn=doomed)
        )
        await process.start()
        info = await read_pidfile(pidfile)
        cleanup.pid(info["grandchild"])
        os.kill(doomed.pid, signal.SIGKILL)
        assert await wait_until(lambda: process.restarts == 1 and process.is_running, 10)
        assert not doomed.alive and not is_alive(info["pid"])
        assert process.pid is not None and ppid_of(process.pid) == os.getpid()  # exec'd by us now
        assert await wait_until(lambda: not is_alive(info["grandchild"]), 5)
    finally:
        doomed.close()


@pytest.mark.parametrize("child_ignores_term", [False, True])
async def test_sigkilled_launcher_takes_zygote_children_and_grandchildren_down(
    tmp_path: Path, cleanup: Cleanup, child_ignores_term: bool
) -> None:
    pidfile = tmp_path / "pids.json"
    extra = ["--ignore-term"] if child_ignores_term else []
    argv = script_argv("zygote_launcher.py", str(pidfile), *extra)
    launcher = subprocess.Popen(argv, start_new_session=True)
    try:
        zygote_file = Path(f"{pidfile}.zygote")
        assert await wait_until(lambda: zygote_file.exists() or launcher.poll() is not None, 30)
        info = await read_pidfile(pidfile)
        zygote_pid = int(zygote_file.read_text())
        cleanup.pid(info["pid"], info["grandchild"], zygote_pid)
        assert ppid_of(zygote_pid) == launcher.pid and ppid_of(info["pid"]) == zygote_pid
        launcher.kill()  # SIGKILL: no chance to clean up
        launcher.wait(timeout=5)
        pids = [zygote_pid, info["pid"], info["grandchild"]]
        gone = await wait_until(lambda: not any(is_alive(p) for p in pids), 6.0)
        assert gone, [p for p in pids if is_alive(p)]
        # The zygote reaped its child before it went: no zombie is left behind.
        assert not Path(f"/proc/{info['pid']}").exists()
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(timeout=5)


def test_fork_is_refused_while_threads_run() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, args=(5,))
    thread.start()
    try:
        with pytest.raises(ZygoteError, match="threads are running"):
            Zygote.start("fork")
    finally:
        stop.set()
        thread.join()


def test_spawn_method_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(zygote_module.SPAWN_METHOD_ENV, raising=False)
    assert resolve_spawn_method() == "zygote"
    assert resolve_spawn_method(None, "exec") == "exec"
    monkeypatch.setenv(zygote_module.SPAWN_METHOD_ENV, "exec")
    assert resolve_spawn_method(None, "zygote") == "exec"
    assert resolve_spawn_method("zygote", "exec") == "zygote"
    with pytest.raises(ConfigError, match="Unknown spawn method 'thread'"):
        resolve_spawn_method("thread")


def test_closing_the_zygote_takes_running_children_down(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int]:
        own = Zygote.start("exec", preload=())
        argv = child_argv("--ignore-term", "--lines", "1")
        process = ManagedProcess("srv", argv, log=quiet_log("s"), spawn=own)
        await process.start()
        assert await wait_until(lambda: process.log.last_lines() == ["line 0"])
        assert process.pid is not None
        await asyncio.to_thread(own.close)
        return process.pid, await process.wait(timeout_s=5)

    pid, code = asyncio.run(scenario())
    assert code == -9 and not is_alive(pid)  # it ignored SIGTERM, so SIGKILL after the grace
