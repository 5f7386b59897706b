"""Fixtures for the launcher tests."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator

import pytest

from tests.launcher.launcher_helpers import Cleanup, is_alive


@pytest.fixture
async def cleanup() -> AsyncIterator[Cleanup]:
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
