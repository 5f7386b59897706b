"""A driver process for the offload API tests: ``python -m tests.ray.driver SCENARIO CONFIG_JSON``.

Runs one scenario against a real cluster and prints one JSON line (the tests assert on it). A separate
process per scenario, because a process joins one cluster once (``ray.init``) and Ray installs threads and
handlers that do not belong in the pytest process.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gymfleet import ray_support
from tests.ray import ray_fns


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


async def api(config: dict[str, Any]) -> dict[str, Any]:
    ray_support.configure({k: v for k, v in config.items() if k.startswith("ray_")})
    out: dict[str, Any] = {}
    start = time.monotonic()
    await ray_support.connect()
    out["connect_s"] = time.monotonic() - start
    ray_support.ship_module(ray_fns)
    traced = await ray_support.run_traced(ray_fns.double, 21, timeout=60)
    out["double"] = traced.value
    out["trace"] = {"backend": traced.backend, "node_id": traced.node_id, "pid": traced.pid}
    out["driver_pid"] = os.getpid()
    out["where"] = await asyncio.gather(*(ray_support.run(ray_fns.where, timeout=60) for _ in range(4)))
    try:
        await ray_support.run(ray_fns.boom, 7, timeout=60)
    except ray_support.RemoteTaskError as exc:
        out["boom"] = {
            "type": type(exc).__name__,
            "remote_type": exc.remote_type,
            "message": str(exc),
            "has_traceback": "bad input 7" in exc.remote_traceback,
        }
    pid_file = Path(tempfile.mkdtemp()) / "pid"
    start = time.monotonic()
    try:
        await ray_support.run(ray_fns.spin_forever, str(pid_file), timeout=3.0)
    except ray_support.OffloadTimeoutError as exc:
        out["timeout"] = {
            "type": type(exc).__name__,
            "after_s": time.monotonic() - start,
            "timeout_s": exc.timeout_s,
        }
    out["timeout"]["worker_killed"] = await _dies(int(pid_file.read_text()))
    if not config.get("with_cancel", True):
        out["after"] = await ray_support.run(ray_fns.double, 2, timeout=60)
        return out
    # A caller that goes away (HTTP client disconnect -> handler task cancelled) kills the task too.
    pid_file.unlink()
    task = asyncio.create_task(ray_support.run(ray_fns.spin_forever, str(pid_file), timeout=60))
    for _ in range(300):
        if pid_file.exists() and pid_file.read_text():
            break
        await asyncio.sleep(0.05)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        out["cancelled"] = True
    out["cancel_killed_worker"] = await _dies(int(pid_file.read_text()))
    out["after"] = await ray_support.run(ray_fns.double, 2, timeout=60)  # the cluster still works
    return out


async def _dies(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while _alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return not _alive(pid)


async def connect_only(config: dict[str, Any]) -> dict[str, Any]:
    ray_support.configure(config)
    try:
        await ray_support.connect(timeout_s=float(config.get("timeout_s", 60)))
    except ray_support.RayConnectError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"error": None}


async def version_mismatch(config: dict[str, Any]) -> dict[str, Any]:
    # Ray's own check, fed the metadata an older cluster would report: the exact error Ray raises.
    ray = ray_support.import_ray()
    from ray._private.utils import check_version_info

    try:
        check_version_info({"ray_version": "2.9.0", "python_version": "3.10.12"}, "127.0.0.1:6379")
    except Exception as exc:
        error = ray_support.translate_connect_error(exc, "127.0.0.1:6379")
        return {"error": type(error).__name__, "message": str(error), "ours": ray.__version__}
    return {"error": None}


SCENARIOS = {"api": api, "connect_only": connect_only, "version_mismatch": version_mismatch}

if __name__ == "__main__":
    result = asyncio.run(SCENARIOS[sys.argv[1]](json.loads(sys.argv[2])))
    print("RESULT " + json.dumps(result), flush=True)
