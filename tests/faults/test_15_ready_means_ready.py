"""Mode 15: start-up lies and environment drift.

* The model endpoint a model server proxies to is not serving yet: the launcher does not report ready (no ready
  file, no "All N / N servers ready") until it answers, then at once; a rollout right after ready succeeds.
* It never serves: start-up fails after ``model_endpoint_readiness_timeout_seconds`` naming the URL and its key.
* A half-built environment (a dependency missing): start-up fails naming the server and the missing module.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import httpx

from tests.faults.test_03_dead_upstream import openai_args
from tests.faults.test_08_port_contention import _launch_fails
from tests.faults.tools import procs
from tests.faults.tools.fleet import AGENT, start_fleet, weather_rows
from tests.faults.tools.upstream import Upstream

KEY = "policy_model.responses_api_models.openai_model.openai_base_url"


def _registered(launcher_log: str) -> int:
    """Healthy instances the head lists, found from the launcher's "head server at <url>" line (0 if none yet)."""
    match = re.search(r"head server at (http://[\d.]+:\d+)", launcher_log)
    if not match:
        return 0
    try:
        listed = httpx.get(match.group(1) + "/server_instances", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return 0
    return sum(1 for i in listed if i.get("status") == "healthy")


def _held() -> tuple[socket.socket, str]:
    held = socket.socket()  # bound, not listening: refused until the "engine" starts serving on it
    held.bind(("127.0.0.1", 0))
    return held, f"http://127.0.0.1:{held.getsockname()[1]}/v1"


def test_not_ready_until_the_model_endpoint_answers(tmp_path: Path, scenario) -> None:
    sc = scenario(15, "model endpoint not serving yet at start-up",
                  "no 'ready' while the endpoint is down; ready within ~2 s once it answers; first rollout succeeds")
    held, base = _held()
    try:
        args = [*openai_args(base), "++model_endpoint_readiness_timeout_seconds=60"]
        with start_fleet(tmp_path, args, wait_ready=False) as fleet:
            servers_up = procs.wait_for(lambda: _registered(fleet.log()) == 3 or fleet.proc.poll() is not None, 60)
            time.sleep(1.5)  # our servers answer; the engine is still "loading"
            ready_early = list(tmp_path.glob("ready-*.json"))
            with Upstream(sock=held):
                served_at = time.monotonic()
                ready_s = procs.wait_for(lambda: bool(list(tmp_path.glob("ready-*.json"))), 30)
                ready = json.loads(next(tmp_path.glob("ready-*.json")).read_text()) if ready_s is not None else {}
                first = httpx.post(ready["servers"][AGENT]["url"] + "/run", json=weather_rows(1)[0], timeout=30) \
                    if ready else None
                after_serving_s = time.monotonic() - served_at
            log = fleet.log()
    finally:
        held.close()
    sc.observe(servers_up_s=servers_up, ready_before_endpoint=bool(ready_early), ready_after_endpoint_s=ready_s,
               first_rollout_status=first.status_code if first is not None else None,
               waiting_logged="waiting for model endpoint" in log or "model endpoint" in log,
               total_after_serving_s=after_serving_s)
    sc.check("not reported ready while the endpoint is down", not ready_early)
    sc.check("ready within 5 s of the endpoint answering", ready_s is not None and ready_s < 5)
    sc.check("first rollout after ready succeeds", first is not None and first.status_code == 200)
    sc.finish()


def test_endpoint_that_never_serves_fails_startup_naming_it(tmp_path: Path, scenario) -> None:
    sc = scenario(15, "model endpoint never serves / half-built environment",
                  "start-up fails (exit 1) after the readiness deadline naming URL + key; a missing dependency is "
                  "named with its server; never 'ready'")
    held, base = _held()
    try:
        code, log, wall = _launch_fails(tmp_path,
                                        ["++head_server.port=0", "++model_endpoint_readiness_timeout_seconds=3"],
                                        base=openai_args(base))
    finally:
        held.close()
    code_b, log_b, wall_b = _launch_fails(tmp_path, ["++head_server.port=0"],
                                          base=["-c", "tests/faults/servers/configs/broken_env.yaml"])
    sc.observe(endpoint_exit=code, endpoint_fail_s=wall, broken_env_exit=code_b, broken_env_fail_s=wall_b,
               message=next((line for line in log.splitlines() if "not answering" in line), "")[-200:])
    sc.check("endpoint: exit 1", code == 1)
    sc.check("endpoint: names the URL and the config key", base in log and KEY in log)
    sc.check("endpoint: fails after the 3 s deadline, within 20 s", 3 <= wall < 20)
    sc.check("endpoint: never said ready", "servers ready" not in log)
    sc.check("half-built env: exit 1 naming the server and the missing module",
             code_b == 1 and "broken_env" in log_b and "gymfleet_fault_suite_missing_dependency" in log_b)
    sc.check("half-built env: never said ready", "servers ready" not in log_b)
    sc.finish()
