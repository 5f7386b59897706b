"""Mode 12: multi-node address advertisement (two hosts as network namespaces).

* A worker's server binds loopback (``127.0.0.1``, or ``127.0.1.1``, what a Debian hostname resolves to) while the
  head is on another host: refused at start-up, naming the address, within seconds; never a hang at rollout time.
* A worker with several NICs binds ``0.0.0.0``: it advertises the address that routes to the head (not the other
  NIC's), and the coordinator reaches the server there.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.faults.tools.fleet import SCRIPTED_CONFIG
from tests.faults.tools.netfaults import start_node_fleet

pytestmark = pytest.mark.netns

HEAD_PORT = 11000
MODEL = "policy_model.responses_api_models.scripted_model"
OTHER_NIC = "10.99.0.5"  # a second interface on the worker, on a network the head cannot reach


def test_loopback_is_never_advertised_to_a_remote_head(topology, tmp_path: Path, scenario) -> None:
    sc = scenario(12, "loopback advertised to a remote head / several NICs",
                  "127.0.0.1 and 127.0.1.1 refused at start-up (exit 1, address named, < 15 s); with 0.0.0.0 the "
                  "address routed to the head is advertised and reachable")
    coord, worker = topology.add_node("coord"), topology.add_node("worker")
    head = start_node_fleet(topology, coord, tmp_path, ["--head-only", f"++head_server.host={coord.ip}",
                                                        f"++head_server.port={HEAD_PORT}"], label="head")
    head_args = ["--worker", "-c", SCRIPTED_CONFIG, f"++head_server.host={coord.ip}", f"++head_server.port={HEAD_PORT}"]
    refused = {}
    for address in ("127.0.0.1", "127.0.1.1"):
        node = start_node_fleet(topology, worker, tmp_path, [*head_args, f"++{MODEL}.host={address}"],
                                label=f"lo-{address}", wait=False)
        start = time.monotonic()
        try:
            code = node.spawned.proc.wait(60)
        except subprocess.TimeoutExpired:
            code = None
        refused[address] = (code, time.monotonic() - start, node.spawned.log())
    # A second NIC on the worker: a veth pair inside its namespace (this kernel has no dummy devices), going nowhere.
    for cmd in (["link", "add", "nic2", "type", "veth", "peer", "name", "nic2p"],
                ["addr", "add", f"{OTHER_NIC}/24", "dev", "nic2"], ["link", "set", "nic2", "up"],
                ["link", "set", "nic2p", "up"]):
        subprocess.run(["ip", "-n", worker.ns, *cmd], check=True, capture_output=True, timeout=10)
    multi = start_node_fleet(topology, worker, tmp_path, [*head_args, f"++{MODEL}.host=0.0.0.0"], label="multi")
    http = topology.http(coord)
    listed = [i for i in http.get(head.head_url + "/server_instances", timeout=10).json()
              if i["process_name"] == "policy_model"]
    reach = http.post(listed[0]["url"] + "/v1/responses", json={"input": "hi"}, timeout=10) if listed else None
    sc.observe(**{f"exit_{a}": c for a, (c, _, _) in refused.items()},
               **{f"fail_s_{a}": w for a, (_, w, _) in refused.items()},
               advertised=listed[0]["host"] if listed else None, worker_ip=worker.ip, other_nic=OTHER_NIC,
               reach_status=reach.status_code if reach is not None else None, multi_nic_ready_s=multi.ready["ready_s"])
    for address, (code, wall, log) in refused.items():
        sc.check(f"{address}: exit 1", code == 1)
        sc.check(f"{address}: names the address and says loopback", f"'{address}'" in log and "loopback" in log)
        sc.check(f"{address}: refused within 15 s", wall < 15)
    sc.check("0.0.0.0 on a two-NIC worker advertises the address routed to the head",
             bool(listed) and listed[0]["host"] == worker.ip)
    sc.check("the coordinator reaches the server at the advertised URL",
             reach is not None and reach.status_code == 200)
    sc.finish()
