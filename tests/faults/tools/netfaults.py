"""Multi-host faults on the multi-node suite's network namespaces (``tests/multinode/netns.py``).

* :func:`start_node_fleet`: ``gymfleet run`` inside a node's namespace (its own network stack), ready file read back;
* :func:`start_upstream`: the fault upstream (``tests/faults/tools/upstream.py``) listening on a node's address;
* :func:`reject`: iptables REJECT (``tcp-reset``) between two nodes; ``Topology.drop`` / ``heal`` do DROP.

Every process runs through ``Topology.spawn`` (own process group, killed at teardown) and every address a test sends
to passes the topology's guard (loopback or the test subnet only).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.faults.tools.fleet import REPO, fleet_env
from tests.multinode.netns import Node, Spawned, Topology

__all__ = ["NodeFleet", "reject", "start_node_fleet", "start_upstream", "unreject"]

BIN = Path(sys.executable).parent
_IPTABLES_TIMEOUT_S = 10.0


class NodeFleet:
    """A ``gymfleet run`` process inside a namespace."""

    def __init__(self, topology: Topology, node: Node, spawned: Spawned, ready_file: Path) -> None:
        self.topology = topology
        self.node = node
        self.spawned = spawned
        self.ready_file = ready_file
        self.ready: dict[str, Any] = {}

    def wait_ready(self, timeout_s: float = 90.0) -> NodeFleet:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.ready_file.exists() and self.spawned.proc.poll() is None:
            time.sleep(0.1)
        if not self.ready_file.exists():
            raise AssertionError(f"fleet in {self.node.ns} not ready (rc={self.spawned.proc.poll()}):\n"
                                 f"{self.spawned.log()[-4000:]}")
        self.ready = json.loads(self.ready_file.read_text())
        return self

    def url(self, name: str) -> str:
        return str(self.ready["servers"][name]["url"])

    @property
    def head_url(self) -> str:
        return str(self.ready["head_url"])


def start_node_fleet(
    topology: Topology, node: Node, tmp: Path, args: Sequence[str], *, label: str = "fleet", wait: bool = True,
    env: dict[str, str] | None = None,
) -> NodeFleet:
    ready_file = tmp / f"ready-{node.name}-{label}-{time.monotonic_ns()}.json"
    argv = [str(BIN / "gymfleet"), "run", *args, "--ready-file", str(ready_file),
            "--log-dir", str(tmp / f"logs-{node.name}-{label}")]
    spawned = topology.spawn(node, argv, env=fleet_env(env), cwd=REPO, label=label)
    fleet = NodeFleet(topology, node, spawned, ready_file)
    return fleet.wait_ready() if wait else fleet


def start_upstream(topology: Topology, node: Node, *, port: int = 0, latency_ms: float = 0.0,
                   timeout_s: float = 30.0) -> tuple[Spawned, int]:
    """The fault upstream on ``node.ip``; returns the process and its port."""
    argv = [sys.executable, "-m", "tests.faults.tools.upstream", "--host", node.ip, "--port", str(port),
            "--latency-ms", str(latency_ms)]
    spawned = topology.spawn(node, argv, env=fleet_env(), cwd=REPO, label="upstream")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and spawned.proc.poll() is None:
        for line in spawned.log().splitlines():
            if line.startswith("PORT "):
                return spawned, int(line.split()[1])
        time.sleep(0.05)
    raise AssertionError(f"upstream in {node.ns} did not start:\n{spawned.log()[-3000:]}")


def _iptables(node: Node, action: str, peer: Node, port: int | None) -> None:
    rule = ["OUTPUT", "-d", peer.ip, "-p", "tcp", *(["--dport", str(port)] if port else [])]
    done = subprocess.run(["ip", "netns", "exec", node.ns, "iptables", action, *rule, "-j", "REJECT",
                           "--reject-with", "tcp-reset"], capture_output=True, text=True, timeout=_IPTABLES_TIMEOUT_S)
    if done.returncode != 0 and action == "-A":
        raise RuntimeError(f"iptables {action} {rule} REJECT in {node.ns} failed: {done.stderr.strip()}")


def reject(topology: Topology, node: Node, peer: Node, *, port: int | None = None) -> None:
    """Connections from ``node`` to ``peer`` (``port``) are refused at once (RST), in ``node``'s namespace."""
    _iptables(node, "-A", peer, port)


def unreject(topology: Topology, node: Node, peer: Node, *, port: int | None = None) -> None:
    _iptables(node, "-D", peer, port)
