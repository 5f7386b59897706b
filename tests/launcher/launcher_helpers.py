"""Helpers for the launcher tests: child scripts, liveness checks, cleanup tracking."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gymfleet.launcher.logs import ProcessLog
from gymfleet.launcher.process import ManagedProcess

SCRIPTS = Path(__file__).parent / "scripts"
CHILD = SCRIPTS / "child.py"


def child_argv(*args: str) -> list[str]:
    return [sys.executable, str(CHILD), *args]


def script_argv(script: str, *args: str) -> list[str]:
    return [sys.executable, str(SCRIPTS / script), *args]


def is_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (an unreaped zombie of ours counts as alive)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    state = raw[raw.rfind(b")") + 2 :].split()[0]
    if state in (b"Z", b"X"):
        ppid = int(raw[raw.rfind(b")") + 2 :].split()[1])
        return ppid == os.getpid()  # our own zombie means we failed to reap it
    return True


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return predicate()


async def read_pidfile(path: Path, timeout: float = 15.0) -> dict[str, Any]:
    assert await wait_until(path.exists, timeout), f"{path} was not written within {timeout} s"
    info: dict[str, Any] = json.loads(path.read_text())
    return info


class Cleanup:
    """Stops every ManagedProcess and kills every pid a test registered, also when it failed."""

    def __init__(self) -> None:
        self.processes: list[ManagedProcess] = []
        self.pids: list[int] = []
        self.logs: list[ProcessLog] = []

    def process(self, process: ManagedProcess) -> ManagedProcess:
        self.processes.append(process)
        return process

    def pid(self, *pids: int | None) -> None:
        self.pids.extend(pid for pid in pids if pid)

    def log(self, log: ProcessLog) -> ProcessLog:
        self.logs.append(log)
        return log


def quiet_log(name: str, **kwargs: Any) -> ProcessLog:
    return ProcessLog(name, quiet=True, **kwargs)
