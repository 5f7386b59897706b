"""Mode 6: a connection silently dropped mid-request (a NAT/LB idle drop; a long judge call that sends no bytes).

Expected: detection by keepalive or a deadline error; the request never hangs until walltime. Two variants:

* a userspace middlebox that stops forwarding mid-request but keeps both sockets open (the kernel keeps ACKing, so
  only a deadline can notice): the model server's ``request_timeout_s`` cuts it, typed ``timeout``;
* a path that goes dark between two hosts mid-response (iptables DROP on the established flow): TCP keepalive with a
  user timeout notices, the call fails typed in seconds although the request deadline is a minute.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.faults.test_03_dead_upstream import OPENAI, openai_args
from tests.faults.tools.fleet import AGENT, start_fleet, weather_rows
from tests.faults.tools.netfaults import start_node_fleet, start_upstream
from tests.faults.tools.proxy import FaultProxy
from tests.faults.tools.upstream import Upstream

REQUEST_TIMEOUT_S = 3.0


def test_stalled_middlebox_mid_request_is_cut_by_the_deadline(tmp_path: Path, scenario) -> None:
    sc = scenario(6, "connection stalls mid-request (userspace middlebox)",
                  f"typed timeout at the {REQUEST_TIMEOUT_S:g}s request deadline, no hang; recovers after heal")
    with Upstream(latency_s=1.0) as upstream, FaultProxy("127.0.0.1", upstream.port) as proxy:
        args = [*openai_args(proxy.url + "/v1"), f"++{OPENAI}.request_timeout_s={REQUEST_TIMEOUT_S}"]
        with start_fleet(tmp_path, args) as fleet, httpx.Client(timeout=120) as client:
            row = weather_rows(1)[0]
            before = client.post(fleet.url(AGENT) + "/run", json=row)
            stall = threading.Timer(0.4, proxy.set_mode, args=("stall",))  # while the upstream is "thinking"
            start = time.monotonic()
            stall.start()
            cut = client.post(fleet.url(AGENT) + "/run", json=row)
            detect_s = time.monotonic() - start
            stall.join()
            proxy.set_mode("pass")
            proxy.reset_all()  # the middlebox forgets its stuck flows
            after = client.post(fleet.url(AGENT) + "/run", json=row)
    error = cut.json().get("error", {}) if cut.status_code >= 400 else {}
    sc.observe(status_before=before.status_code, status_stalled=cut.status_code, error_type=error.get("type"),
               time_to_detect_s=detect_s, status_after=after.status_code)
    sc.check("served before the fault", before.status_code == 200)
    sc.check("stalled call ends typed as a timeout (504 upstream_timeout)",
             cut.status_code == 504 and error.get("type") == "upstream_timeout")
    sc.check(f"cut within request_timeout_s + 3 s ({REQUEST_TIMEOUT_S + 3:g} s)", detect_s <= REQUEST_TIMEOUT_S + 3)
    sc.check("serves again after the heal", after.status_code == 200)
    sc.finish()


@pytest.mark.netns
def test_path_dark_mid_response_is_detected_by_keepalive(topology, tmp_path: Path, scenario) -> None:
    sc = scenario(6, "path goes dark mid-response (iptables DROP, two hosts)",
                  "keepalive + TCP user timeout detect it in seconds (request deadline 60 s); typed failure")
    gym, llm = topology.add_node("gym"), topology.add_node("llm")
    _, port = start_upstream(topology, llm, latency_ms=2000)  # a long call that sends no bytes for 2 s
    base = f"http://{llm.ip}:{port}/v1"
    topology.guard(gym, base)
    keepalive = {"GYMFLEET_TCP_KEEPIDLE_S": "1", "GYMFLEET_TCP_KEEPINTVL_S": "1", "GYMFLEET_TCP_KEEPCNT": "2",
                 "GYMFLEET_TCP_USER_TIMEOUT_S": "3"}  # seconds, not the defaults' minute, to keep the test short
    fleet = start_node_fleet(topology, gym, tmp_path,
                             [*openai_args(base), f"++{OPENAI}.request_timeout_s=60", "++head_server.port=0"],
                             env=keepalive)
    http = topology.http(gym)
    row = weather_rows(1)[0]
    dark = threading.Timer(0.5, topology.drop, args=(gym, llm), kwargs={"port": port})
    start = time.monotonic()
    dark.start()
    try:
        cut = http.post(fleet.url(AGENT) + "/run", json=row, timeout=120)
        detect_s = time.monotonic() - start
    finally:
        dark.join()
        topology.heal(gym, llm, port=port)
    after = http.post(fleet.url(AGENT) + "/run", json=row, timeout=60)
    error = cut.json().get("error", {}) if cut.status_code >= 400 else {}
    sc.observe(status_dark=cut.status_code, error_type=error.get("type"), time_to_detect_s=detect_s,
               request_deadline_s=60, status_after_heal=after.status_code)
    sc.check("the call fails typed (5xx naming the model server)",
             cut.status_code in (502, 504) and error.get("upstream_server_type") == "responses_api_models")
    sc.check("detected within 20 s (not the 60 s deadline, not walltime)", detect_s < 20)
    sc.check("serves again after the heal", after.status_code == 200)
    sc.finish()
