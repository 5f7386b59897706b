"""Mode 3: the model endpoint is dead (connection refused) or blackholed (iptables DROP: SYNs vanish).

Expected: each call fails typed within a bounded time (connect timeout per attempt, a bounded number of attempts,
and no retry multiplication across hops: the agent does not retry the model server's typed 502); the first failure
is logged at once with the URL and the cause; concurrency permits are released, so once the endpoint is back the
next rollouts succeed at once.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from tests.faults.tools.fleet import AGENT, EXAMPLE_CONFIG, account, collect, start_fleet, weather_rows
from tests.faults.tools.netfaults import start_node_fleet, start_upstream
from tests.faults.tools.upstream import Upstream

OPENAI_CONFIG = "responses_api_models/openai_model/configs/openai_model.yaml"
OPENAI = "policy_model.responses_api_models.openai_model"
CAP = 2  # max_concurrent_requests of the model server: leaked permits would block recovery
CONNECT_TIMEOUT_S = 1.0
ATTEMPTS = 4  # transport default (RetryPolicy.max_attempts)
USER_TIMEOUT_S = 2


def openai_args(base_url: str) -> list[str]:
    return ["-c", EXAMPLE_CONFIG, "-c", OPENAI_CONFIG, f"++policy_base_url={base_url}", "++policy_api_key=sk-test",
            "++policy_model_name=fault-model", f"++{OPENAI}.max_concurrent_requests={CAP}",
            f"++{OPENAI}.connect_timeout_s={CONNECT_TIMEOUT_S}", "++model_endpoint_readiness_timeout_seconds=0"]


def test_connection_refused_fails_fast_bounded_and_recovers(tmp_path: Path, scenario) -> None:
    sc = scenario(3, "dead upstream (connection refused)",
                  "typed model_error in seconds, <=4 connect attempts per call, no hop multiplication, "
                  "first failure logged with URL+cause, permits released (recovers at once)")
    held = socket.socket()  # bound, not listening: every connection is refused, and nobody else can take the port
    held.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{held.getsockname()[1]}/v1"
    try:
        with start_fleet(tmp_path, openai_args(base)) as fleet:
            out = tmp_path / "refused.jsonl"
            _, _, wall_dead = collect(fleet.head_url, weather_rows(6), out, agent=AGENT, num_samples_in_parallel=6,
                                      max_attempts=1, max_failure_rate=1.0)
            dead = account(out, 6)
            log = (tmp_path / "logs" / "policy_model.log").read_text(errors="replace")
            agent_log = (tmp_path / "logs" / f"{AGENT}.log").read_text(errors="replace")
            with Upstream(sock=held):
                back_at = time.monotonic()
                out2 = tmp_path / "recovered.jsonl"
                _, _, wall_back = collect(fleet.head_url, weather_rows(6), out2, agent=AGENT,
                                          num_samples_in_parallel=6, max_attempts=1)
                recovered = account(out2, 6)
                recovery_s = time.monotonic() - back_at
    finally:
        held.close()
    retries = [line for line in log.splitlines() if "cannot connect to upstream" in line]
    first = retries[0] if retries else ""
    agent_retries = [line for line in agent_log.splitlines() if re.search(r"answered HTTP 5\d\d .*retry", line)]
    sc.observe(wall_all_failed_s=wall_dead, failure_classes=dead["classes"], model_server_retries=len(retries),
               agent_retries_of_model_502=len(agent_retries), first_log_line=first[-200:],
               recovered=recovered["succeeded"], recovery_wall_s=recovery_s)
    sc.check("every rollout failed typed as model_error", dead["classes"] == {"model_error": 6})
    sc.check("failed within 10 s (no infinite retry)", wall_dead < 10)
    sc.check(f"<= {ATTEMPTS - 1} retries per call at the model server", len(retries) <= 6 * (ATTEMPTS - 1))
    sc.check("the agent did not retry the model server's typed 502", not agent_retries)
    sc.check("first failure logged at once with URL and cause",
             base.removesuffix("/v1") in first
             and ("refused" in first.lower() or "connect call failed" in first.lower()))
    sc.check(f"permits released: {CAP}-slot model server serves all 6 after recovery", recovered["succeeded"] == 6)
    sc.finish()


@pytest.mark.netns
def test_blackholed_upstream_on_another_host_is_cut_by_the_connect_timeout(topology, tmp_path: Path, scenario) -> None:
    sc = scenario(3, "blackholed upstream (iptables DROP, two hosts)",
                  f"typed failure within user timeout + {ATTEMPTS} x connect timeout ({CONNECT_TIMEOUT_S:g}s), not "
                  "127 s of SYN retries or 15 min of retransmits; heals at once")
    gym, llm = topology.add_node("gym"), topology.add_node("llm")
    _, port = start_upstream(topology, llm)
    base = f"http://{llm.ip}:{port}/v1"
    topology.guard(gym, base)
    # The first call leaves a pooled connection to the upstream: after the DROP the next call reuses it, and only
    # TCP_USER_TIMEOUT (unacknowledged bytes) notices; 2 s here instead of the default 30 s to keep the test short.
    fleet = start_node_fleet(topology, gym, tmp_path, [*openai_args(base), "++head_server.port=0"],
                             env={"GYMFLEET_TCP_USER_TIMEOUT_S": str(USER_TIMEOUT_S)})
    http = topology.http(gym)
    row = weather_rows(1)[0]
    ok = http.post(fleet.url(AGENT) + "/run", json=row, timeout=30)
    topology.drop(gym, llm, port=port)
    try:
        start = time.monotonic()
        cut = http.post(fleet.url(AGENT) + "/run", json=row, timeout=120)
        detect_s = time.monotonic() - start
    finally:
        topology.heal(gym, llm, port=port)
    start = time.monotonic()
    healed = http.post(fleet.url(AGENT) + "/run", json=row, timeout=30)
    heal_s = time.monotonic() - start
    error = cut.json().get("error", {}) if cut.status_code >= 400 else {}
    sc.observe(status_before=ok.status_code, status_blackholed=cut.status_code, error_type=error.get("type"),
               upstream_server_type=error.get("upstream_server_type"), time_to_detect_s=detect_s,
               status_after_heal=healed.status_code, time_to_recover_s=heal_s)
    sc.check("served before the fault", ok.status_code == 200)
    sc.check("blackholed call fails typed (502/504 naming the model server)",
             cut.status_code in (502, 504) and error.get("upstream_server_type") == "responses_api_models")
    # the reused pooled connection (user timeout) + the other attempts' connect timeouts + backoff (<= 1.4 s) + slack
    bound = USER_TIMEOUT_S + ATTEMPTS * CONNECT_TIMEOUT_S + 6.0
    sc.check(f"detected within {bound:.0f} s (attempts x connect timeout + backoff)", detect_s <= bound)
    sc.check("serves again right after the heal", healed.status_code == 200 and heal_s < 10)
    sc.finish()
