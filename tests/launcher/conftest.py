"""Fixtures for the launcher tests.

Every test that starts processes (it uses ``cleanup``) runs twice: with servers started by exec and by
a zygote (:mod:`gymfleet.launcher.zygote`). ``GYMFLEET_SPAWN_METHOD=exec|zygote`` keeps one of the two.
The zygote tests themselves choose their spawner per process and run once.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator

import pytest

from gymfleet.launcher import zygote
from tests.launcher.launcher_helpers import Cleanup, is_alive

_ONLY = os.environ.get(zygote.SPAWN_METHOD_ENV) or None
SPAWN_MODES = [mode for mode in ("exec", "zygote") if _ONLY in (None, mode)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cleanup" in metafunc.fixturenames and not metafunc.module.__name__.endswith("test_zygote"):
        metafunc.parametrize("spawn_mode", SPAWN_MODES, indirect=True)


@pytest.fixture(scope="session")
def session_zygote() -> Iterator[zygote.Zygote]:
    started = zygote.Zygote.start("exec", preload=())  # pytest runs threads: exec, not fork
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def spawn_mode(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Make the session's zygote this process's default (ManagedProcess spawn="auto"), or no zygote."""
    mode = getattr(request, "param", None)
    if mode is None:
        yield None
        return
    previous = zygote.set_default(request.getfixturevalue("session_zygote") if mode == "zygote" else None)
    try:
        yield mode
    finally:
        zygote.set_default(previous)


@pytest.fixture
async def cleanup(spawn_mode: str | None) -> AsyncIterator[Cleanup]:
    tracker = Cleanup()
    try:
        yield tracker
    finally:
        for process in tracker.processes:
            await process.stop(0.5)
        for pid in tracker.pids:
            if is_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for log in tracker.logs:
            log.close()
