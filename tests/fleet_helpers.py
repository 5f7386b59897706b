"""Start real fleets as subprocesses for tests, and make sure every process they started is gone afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = "resources_servers/example_single_tool_call/configs/example_single_tool_call.yaml"
SCRIPTED_CONFIG = "responses_api_models/scripted_model/configs/scripted_model.yaml"
EXAMPLE_DATA = REPO / "resources_servers/example_single_tool_call/data/example.jsonl"
AGENT = "example_single_tool_call_simple_agent"
TEST_SERVERS_ROOT = REPO / "tests" / "servers"


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


@dataclass
class RunningFleet:
    proc: subprocess.Popen[bytes]
    ready: dict[str, Any]
    log_path: Path

    @property
    def head_url(self) -> str:
        return str(self.ready["head_url"])

    def url(self, name: str) -> str:
        return str(self.ready["servers"][name]["url"])

    def server_pids(self) -> list[int]:
        return [int(s["pid"]) for s in self.ready.get("servers", {}).values() if s.get("pid")]

    def instances(self) -> list[dict[str, Any]]:
        return httpx.get(self.head_url + "/server_instances", timeout=5).json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def run_fleet_process(
    tmp_path: Path,
    args: Sequence[str],
    *,
    command: Sequence[str] | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 60.0,
    wait_ready: bool = True,
) -> Iterator[RunningFleet]:
    """``gymfleet run <args> --ready-file ...`` in its own process group; killed (group-wide) on exit."""
    ready_file = tmp_path / f"ready-{time.monotonic_ns()}.json"
    log_path = tmp_path / f"launcher-{time.monotonic_ns()}.log"
    if command is None:
        argv = [sys.executable, "-m", "gymfleet.cli.main", "run", *args, "--ready-file", str(ready_file),
                "--log-dir", str(tmp_path / "logs")]
    else:
        argv = [*command, *args, f"++ready_file={ready_file}"]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=cwd or REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    fleet = RunningFleet(proc, {}, log_path)
    try:
        if wait_ready:
            ok = wait_until(lambda: ready_file.exists() or proc.poll() is not None, timeout_s)
            if not ready_file.exists():
                raise AssertionError(f"fleet not ready (ok={ok}, rc={proc.poll()}):\n{fleet.log()[-4000:]}")
            fleet.ready = json.loads(ready_file.read_text())
        yield fleet
    finally:
        pids = fleet.server_pids()
        stop_process_group(proc)
        for pid in pids:  # servers have their own groups: make sure none survived
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)


def stop_process_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> int | None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode
