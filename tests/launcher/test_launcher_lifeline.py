"""The lifeline: a SIGKILLed launcher takes its servers and their helpers with it."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from gymfleet.launcher.lifeline import group_has_live_members, process_group_members
from gymfleet.launcher.process import ManagedProcess
from tests.launcher.launcher_helpers import (
    Cleanup,
    child_argv,
    is_alive,
    quiet_log,
    read_pidfile,
    script_argv,
    wait_until,
)


async def test_sigkilled_launcher_takes_child_and_grandchild_down(tmp_path: Path, cleanup: Cleanup) -> None:
    pidfile = tmp_path / "pids.json"
    launcher = subprocess.Popen(script_argv("mini_launcher.py", str(pidfile)), start_new_session=True)
    cleanup.pid(launcher.pid)
    try:
        info = await read_pidfile(pidfile)
        cleanup.pid(info["pid"], info["grandchild"])
        assert is_alive(info["pid"]) and is_alive(info["grandchild"])
        launcher.kill()  # SIGKILL: the launcher gets no chance to clean up
        launcher.wait(timeout=5)
        assert await wait_until(lambda: not is_alive(info["pid"]) and not is_alive(info["grandchild"]), 2.0)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(timeout=5)


async def test_parent_watch_notices_an_orphaned_server(tmp_path: Path, cleanup: Cleanup) -> None:
    # spawn_and_exit starts the server without a death signal, then exits: only the watch can notice.
    pidfile = tmp_path / "pids.json"
    done = subprocess.run(
        script_argv("spawn_and_exit.py", *child_argv("--parent-watch", "--pidfile", str(pidfile))),
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    pid = int(done.stdout)
    cleanup.pid(pid)
    assert (await read_pidfile(pidfile))["pid"] == pid
    assert await wait_until(lambda: not is_alive(pid), 3.0)
    assert Path(f"{pidfile}.orphaned").exists(), "the child exited, but not through its parent watch"


async def test_group_members_and_liveness(tmp_path: Path, cleanup: Cleanup) -> None:
    pidfile = tmp_path / "pids.json"
    process = cleanup.process(
        ManagedProcess("srv", child_argv("--grandchild", "--pidfile", str(pidfile)), log=quiet_log("srv"))
    )
    await process.start()
    info = await read_pidfile(pidfile)
    cleanup.pid(info["grandchild"])
    assert process_group_members(info["pgid"]) == sorted([info["pid"], info["grandchild"]])
    assert group_has_live_members(info["pgid"])
    assert os.getpid() not in process_group_members(info["pgid"])
    await process.stop(2.0)
    assert not group_has_live_members(info["pgid"])
    assert process_group_members(info["pgid"]) == []


async def test_kill_own_process_group_spares_the_caller(tmp_path: Path, cleanup: Cleanup) -> None:
    # The child's SIGTERM handler calls kill_own_process_group() and then exits 0 by itself:
    # the grandchild dies from the group signal, the child is not killed by it.
    pidfile = tmp_path / "pids.json"
    process = cleanup.process(
        ManagedProcess(
            "srv",
            child_argv("--grandchild", "--group-kill-on-term", "--pidfile", str(pidfile)),
            log=quiet_log("srv"),
        )
    )
    await process.start()
    info = await read_pidfile(pidfile)
    cleanup.pid(info["grandchild"])
    os.kill(info["pid"], signal.SIGTERM)  # only the leader, not the group
    assert await process.wait(timeout_s=5) == 0
    assert await wait_until(lambda: not is_alive(info["grandchild"]), 2.0)
