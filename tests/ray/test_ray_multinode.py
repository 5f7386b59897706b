"""Two Ray nodes on two simulated hosts: the head in one network namespace, a worker in another.

The head listens on its namespace's address (not loopback), so it runs with token authentication; the worker
node and the fleet get the token file. The head offers no CPUs: every task must run on the worker node.
The fleet runs in the head's namespace and joins by GCS address; HTTP goes through the netns helper's guard.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import pytest

from gymfleet.ray_support import LocalRayCluster
from tests.fakes.bodies import answer_body as math_body
from tests.fleet_helpers import REPO, pid_alive
from tests.ray.helpers import RAY_ENVS_CONFIG, require_ray, require_sympy, session_of

pytestmark = [pytest.mark.slow, pytest.mark.netns]


def test_head_and_worker_nodes_in_separate_network_namespaces(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    require_ray()
    require_sympy()
    try:
        from tests.multinode.netns import Topology, netns_unavailable_reason
    except ImportError:
        pytest.skip("tests/multinode/netns.py (the network namespace helper) is not in this checkout")
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    logs = tmp_path_factory.mktemp("mnray-logs")
    token = logs / "token"
    token.write_text(os.urandom(24).hex())
    token.chmod(0o600)
    with Topology(logs / "procs", prefix=f"gf{os.getpid()}-ry-") as topo:
        head_node, worker_node = topo.add_node("head"), topo.add_node("wrk")
        head = LocalRayCluster(
            temp_dir=tmp_path_factory.mktemp("rh"),
            num_cpus=0,
            node_ip_address=head_node.ip,
            token_path=token,
            log_path=logs / "head.log",
            command_prefix=["ip", "netns", "exec", head_node.ns],
        )
        worker = None
        node_pids: list[int] = []
        try:
            address = asyncio.run(head.start(timeout_s=150))
            assert address.startswith(head_node.ip + ":"), address
            worker = LocalRayCluster(
                temp_dir=tmp_path_factory.mktemp("rw"),
                num_cpus=2,
                node_ip_address=worker_node.ip,
                join_address=address,
                token_path=token,
                log_path=logs / "worker.log",
                command_prefix=["ip", "netns", "exec", worker_node.ns],
            )
            asyncio.run(worker.start(timeout_s=150))

            # Without the token the head refuses us, and the error says what to do.
            refused = topo.run(
                head_node,
                [
                    sys.executable,
                    "-m",
                    "tests.ray.driver",
                    "connect_only",
                    json.dumps({"ray_head_node_address": address, "timeout_s": 60}),
                ],
                cwd=REPO,
                timeout=120,
            )
            assert '"error": "RayAuthError"' in refused.stdout, refused.stdout + refused.stderr

            ready = logs / "ready.json"
            fleet = topo.spawn(
                head_node,
                [
                    sys.executable,
                    "-m",
                    "gymfleet.cli.main",
                    "run",
                    "-c",
                    RAY_ENVS_CONFIG,
                    "++head_server.port=0",
                    f"++ray_head_node_address={address}",
                    f"++ray_auth_token_path={token}",
                    "--ready-file",
                    str(ready),
                    "--log-dir",
                    str(logs / "fleet"),
                ],
                cwd=REPO,
                label="fleet",
            )
            deadline = time.monotonic() + 120
            while not ready.exists() and fleet.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert ready.exists(), fleet.log()[-3000:]
            url = json.loads(ready.read_text())["servers"]["math_verify"]["url"]
            http = topo.http(head_node)
            for expected in ("6", "7"):
                resp = http.post(
                    url + "/verify", json=math_body("\\boxed{2 \\cdot 3}", expected), timeout=120
                )
                assert resp.status_code == 200, resp.text
                body = resp.json()
                assert body["reward"] == (1.0 if expected == "6" else 0.0)
                assert body["verify_trace"]["backend"] == "ray"
                # The head has no CPUs: the check ran in a worker process of the other host's node.
                assert session_of(body["verify_trace"]["pid"]) == worker.pgid, (
                    body["verify_trace"],
                    worker.pgid,
                )
            fleet.stop()
        finally:
            node_pids = head.members() + (worker.members() if worker is not None else [])
            if worker is not None:
                asyncio.run(worker.stop())
            asyncio.run(head.stop())
    assert node_pids and not [pid for pid in node_pids if pid_alive(pid)], (
        "processes of the Ray nodes survived"
    )
