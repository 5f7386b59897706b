"""ManagedProcess: output, stop (TERM, KILL, whole group, reaped), crash restarts and budgets."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from gymfleet.errors import LauncherError, RestartBudgetExceededError, ServerStartupError
from gymfleet.launcher.process import ManagedProcess, ProcessState, RestartPolicy, describe_returncode
from tests.launcher.launcher_helpers import Cleanup, child_argv, is_alive, quiet_log, read_pidfile, wait_until

FAST = RestartPolicy(max_restarts=2, window_s=60.0, backoff_initial_s=0.05, backoff_max_s=0.2)


async def test_output_goes_to_the_log_and_a_clean_exit_is_stopped(cleanup: Cleanup) -> None:
    process = cleanup.process(
        ManagedProcess("srv", child_argv("--lines", "3", "--exit-after", "0"), log=quiet_log("srv"))
    )
    assert process.state is ProcessState.NEW
    await process.start()
    assert process.pid is not None
    assert await process.wait(timeout_s=5) == 0
    assert process.state is ProcessState.STOPPED and not process.is_running
    assert process.log.last_lines() == ["line 0", "line 1", "line 2", "exiting with 0"]


async def test_an_error_exit_without_policy_fails_with_context(cleanup: Cleanup) -> None:
    codes: list[int] = []
    process = cleanup.process(
        ManagedProcess(
            "srv",
            child_argv("--lines", "2", "--exit-after", "0", "--code", "3"),
            log=quiet_log("srv"),
            on_exit=lambda proc, code: codes.append(code),
        )
    )
    await process.start()
    assert await process.wait(timeout_s=5) == 3
    assert process.state is ProcessState.FAILED and codes == [3]
    report = process.exit_report()
    assert "'srv'" in report and "exit code 3" in report and "line 1" in report


async def test_stop_sends_sigterm_and_reaps(cleanup: Cleanup) -> None:
    process = cleanup.process(ManagedProcess("srv", child_argv(), log=quiet_log("srv")))
    await process.start()
    pid = process.pid
    assert pid is not None and process.is_running and process.state is ProcessState.RUNNING
    started = time.monotonic()
    assert await process.stop(5.0) == -15
    assert time.monotonic() - started < 2.0
    assert process.state is ProcessState.STOPPED
    assert not Path(f"/proc/{pid}").exists(), "the child was not reaped (zombie)"


async def test_a_child_ignoring_sigterm_is_killed_after_the_grace(cleanup: Cleanup) -> None:
    process = cleanup.process(
        ManagedProcess("stubborn", child_argv("--ignore-term", "--lines", "1"), log=quiet_log("s"))
    )
    await process.start()
    assert await wait_until(lambda: process.log.last_lines() == ["line 0"])  # handler installed
    started = time.monotonic()
    assert await process.stop(0.5) == -9
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 3.0
    assert describe_returncode(-9) == "signal SIGKILL (9)"


@pytest.mark.parametrize("grandchild_ignores_term", [False, True])
async def test_stop_takes_the_whole_group_down(
    tmp_path: Path, cleanup: Cleanup, grandchild_ignores_term: bool
) -> None:
    extra = ["--grandchild-ignores-term"] if grandchild_ignores_term else []
    pidfile = tmp_path / "pids.json"
    process = cleanup.process(
        ManagedProcess(
            "srv", child_argv("--grandchild", "--pidfile", str(pidfile), *extra), log=quiet_log("srv")
        )
    )
    await process.start()
    info = await read_pidfile(pidfile)
    cleanup.pid(info["grandchild"])
    assert info["pgid"] == process.pid
    assert is_alive(info["grandchild"])
    await process.stop(0.5)
    assert not is_alive(info["pid"]) and not Path(f"/proc/{info['pid']}").exists()
    assert not is_alive(info["grandchild"])


async def test_helpers_left_behind_by_a_crashed_child_are_cleaned_up(
    tmp_path: Path, cleanup: Cleanup
) -> None:
    pidfile = tmp_path / "pids.json"
    process = cleanup.process(
        ManagedProcess(
            "srv",
            child_argv("--grandchild", "--pidfile", str(pidfile), "--exit-after", "0.3", "--code", "1"),
            log=quiet_log("srv"),
        )
    )
    await process.start()
    info = await read_pidfile(pidfile)
    cleanup.pid(info["grandchild"])
    assert await process.wait(timeout_s=5) == 1
    assert not is_alive(info["grandchild"])


async def test_crashing_child_is_restarted_until_the_budget_runs_out(cleanup: Cleanup) -> None:
    exits: list[tuple[int, ProcessState, int | None]] = []

    async def on_exit(proc: ManagedProcess, code: int) -> None:
        exits.append((code, proc.state, proc.pid))

    process = cleanup.process(
        ManagedProcess(
            "flaky",
            child_argv("--lines", "1", "--exit-after", "0.2", "--code", "1"),
            log=quiet_log("flaky"),
            restart=FAST,
            on_exit=on_exit,
        )
    )
    await process.start()
    assert await process.wait(timeout_s=10) == 1
    assert process.state is ProcessState.FAILED
    assert process.restarts == 2
    assert [(code, state) for code, state, _ in exits] == [
        (1, ProcessState.RESTARTING),
        (1, ProcessState.RESTARTING),
        (1, ProcessState.FAILED),
    ]
    assert len({pid for _, _, pid in exits}) == 3, "each restart is a new process"
    assert isinstance(process.error, RestartBudgetExceededError)
    message = str(process.error)
    assert "'flaky'" in message and "exit code 1" in message and "exiting with 1" in message
    assert process.error.server_name == "flaky"


async def test_clean_exits_are_restarted_too(cleanup: Cleanup) -> None:
    policy = RestartPolicy(max_restarts=1, backoff_initial_s=0.01, backoff_max_s=0.01)
    process = cleanup.process(
        ManagedProcess("srv", child_argv("--exit-after", "0"), log=quiet_log("srv"), restart=policy)
    )
    await process.start()
    assert await process.wait(timeout_s=5) == 0
    assert process.restarts == 1 and process.state is ProcessState.FAILED


async def test_stop_during_backoff_cancels_the_restart(cleanup: Cleanup) -> None:
    slow = RestartPolicy(max_restarts=5, backoff_initial_s=30.0, backoff_max_s=30.0)
    process = cleanup.process(
        ManagedProcess(
            "srv", child_argv("--exit-after", "0", "--code", "2"), log=quiet_log("srv"), restart=slow
        )
    )
    await process.start()
    assert await wait_until(lambda: process.state is ProcessState.RESTARTING)
    started = time.monotonic()
    assert await process.stop(1.0) == 2
    assert time.monotonic() - started < 2.0
    assert process.state is ProcessState.STOPPED and process.restarts == 0


async def test_stop_is_idempotent_and_concurrent(cleanup: Cleanup) -> None:
    never = ManagedProcess("idle", child_argv(), log=quiet_log("idle"))
    assert await never.stop() is None
    process = cleanup.process(ManagedProcess("srv", child_argv(), log=quiet_log("srv")))
    await process.start()
    first, second = await asyncio.gather(process.stop(2.0), process.stop(2.0))
    assert first == second == -15
    assert await process.stop() == -15


async def test_a_stopped_process_can_be_started_again(cleanup: Cleanup) -> None:
    process = cleanup.process(ManagedProcess("srv", child_argv(), log=quiet_log("srv")))
    await process.start()
    with pytest.raises(LauncherError, match="already running"):
        await process.start()
    first_pid = process.pid
    await process.stop(2.0)
    await process.start()
    assert process.is_running and process.pid != first_pid and process.returncode is None
    await process.stop(2.0)


async def test_a_missing_program_is_a_startup_error(tmp_path: Path) -> None:
    process = ManagedProcess("ghost", [str(tmp_path / "no-such-program")], log=quiet_log("ghost"))
    with pytest.raises(ServerStartupError) as caught:
        await process.start()
    assert caught.value.server_name == "ghost" and "no-such-program" in str(caught.value)
    assert process.state is ProcessState.FAILED


async def test_wait_before_start_is_an_error() -> None:
    with pytest.raises(LauncherError, match="never started"):
        await ManagedProcess("srv", child_argv(), log=quiet_log("srv")).wait()


async def test_env_and_cwd_reach_the_child(tmp_path: Path, cleanup: Cleanup) -> None:
    env = {**os.environ, "GYMFLEET_TEST_VALUE": "forty-two"}
    code = "import os; print(os.environ['GYMFLEET_TEST_VALUE'], os.getcwd())"
    process = cleanup.process(
        ManagedProcess("env", [child_argv()[0], "-c", code], cwd=tmp_path, env=env, log=quiet_log("env"))
    )
    await process.start()
    assert await process.wait(timeout_s=5) == 0
    assert process.log.last_lines() == [f"forty-two {tmp_path}"]


def test_restart_policy_backoff_is_capped_and_jittered() -> None:
    policy = RestartPolicy(backoff_initial_s=1.0, backoff_max_s=4.0)
    for attempt, cap in [(0, 1.0), (1, 2.0), (2, 4.0), (10, 4.0)]:
        delays = [policy.delay(attempt) for _ in range(50)]
        assert all(cap / 2 <= delay <= cap for delay in delays)
        assert len(set(delays)) > 1
