"""Faults that need the head as its own process: a head restart mid-collection, and a worker node crash.

coord: ``gymfleet run --head-only`` (the head alone, restartable on its port) and ``ng_run`` of the
tutorial's coordinator config, which joins that head as a worker (auto mode: a head already answers here);
w1, w2: the tutorial's worker config, one ``policy_model`` replica each (scripted, 100 ms per call, so a
collection takes seconds).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.multinode.cluster import (
    HEAD_PORT,
    GymNode,
    collect,
    failures_path,
    instances,
    read_rows,
    render_config,
    start_gym_node,
    wait_until,
)
from tests.multinode.netns import Node, Topology

pytestmark = pytest.mark.netns

LEASE_S = 3.0
HEARTBEAT_S = LEASE_S / 3  # the head tells servers to beat three times per lease
SWEEP_S = LEASE_S / 4
MODEL = "policy_model.responses_api_models.scripted_model"
ROLLOUTS = [
    "+num_repeats=12",
    "+num_samples_in_parallel=4",
]  # 5 rows x 12 = 60 rollouts (>= 3 s: 2 x 100 ms each)
LONG_ROLLOUTS = ["+num_repeats=30", "+num_samples_in_parallel=4"]  # 150 rollouts, >= 7.5 s


@dataclass
class HeadFleet:
    topology: Topology
    tmp: Path
    node: Node
    coord_files: list[Path]
    head: GymNode
    coord: GymNode
    workers: dict[str, GymNode] = field(default_factory=dict)

    @property
    def head_url(self) -> str:
        return f"http://{self.node.ip}:{HEAD_PORT}"

    def instances(self) -> list[dict]:
        return instances(self.coord.http, self.head_url)

    def expected(self) -> set[tuple[str, int]]:
        nodes = [self.coord, *self.workers.values()]
        return {(name, int(s["pid"])) for g in nodes for name, s in g.ready["servers"].items()}

    def start_head(self) -> GymNode:
        return start_gym_node(
            self.topology,
            self.node,
            self.coord_files,
            self.tmp,
            command="gymfleet",
            extra_args=["--head-only"],
            overrides=[f"++registry_lease_s={LEASE_S}", "++registry_evict_after_s=30"],
            label="head",
        ).wait_ready(60)


@pytest.fixture(scope="module")
def fleet(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> HeadFleet:
    tmp = tmp_path_factory.mktemp("headfleet")
    c = topology.add_node("coord")
    worker_nodes = [topology.add_node("w1"), topology.add_node("w2")]
    coord_files = [render_config("coordinator-config.yaml", tmp, coordinator=c)]
    fleet = HeadFleet(topology, tmp, c, coord_files, head=None, coord=None)  # type: ignore[arg-type]
    fleet.head = fleet.start_head()
    assert fleet.head.ready["mode"] == "head-only"
    fleet.coord = start_gym_node(topology, c, coord_files, tmp, overrides=["++client.cache_ttl_s=1"])
    for w in worker_nodes:
        files = [render_config("worker-config.yaml", tmp, coordinator=c, node=w)]
        fleet.workers[w.name] = start_gym_node(
            topology, w, files, tmp, overrides=[f"++{MODEL}.latency_ms=100"]
        )
    fleet.coord.wait_ready(120)
    assert fleet.coord.ready["mode"] == "worker"  # auto: a head already answers at head_server
    for worker in fleet.workers.values():
        worker.wait_ready(120)
    return fleet


def _listed(fleet: HeadFleet) -> set[tuple[str, int]]:
    with contextlib.suppress(Exception):
        return {(i["process_name"], i["pid"]) for i in fleet.instances() if i["status"] == "healthy"}
    return set()


def _finish(fleet: HeadFleet, collector, out: Path, total: int) -> None:
    try:
        assert collector.proc.wait(120) == 0, collector.log()[-3000:]
    finally:
        collector.stop()
    rows, failed = read_rows(out), read_rows(failures_path(out))
    assert len(rows) + len(failed) == total  # every row accounted for
    assert not failed, failed[:2]
    assert all(r["reward"] == 1.0 for r in rows)


def test_head_restart_mid_collection_servers_reregister_and_collection_finishes(fleet: HeadFleet) -> None:
    assert _listed(fleet) == fleet.expected()
    out = fleet.tmp / "head-restart.jsonl"
    collector = collect(
        fleet.topology,
        fleet.node,
        out,
        agent="example_agent",
        head=fleet.node,
        background=True,
        extra=LONG_ROLLOUTS,
    )
    assert wait_until(lambda: len(read_rows(out)) >= 5 or collector.proc.poll() is not None, 60)
    killed_at = time.monotonic()
    os.killpg(fleet.head.spawned.pid, signal.SIGKILL)  # the head dies; servers and the collection go on
    fleet.head.spawned.proc.wait(10)
    fleet.head = fleet.start_head()  # same port, empty registry
    head_up = time.monotonic()
    assert collector.proc.poll() is None, "the collection ended before the head came back; make it longer"
    assert wait_until(lambda: _listed(fleet) == fleet.expected(), 2 * HEARTBEAT_S + 10), _listed(fleet)
    reregistered = time.monotonic() - head_up
    rows_at_reregistration = len(read_rows(out))
    _finish(fleet, collector, out, total=150)
    print(
        f"head restart: head down {head_up - killed_at:.2f}s; all {len(fleet.expected())} servers "
        "re-registered "
        f"{reregistered:.2f}s after the new head was ready (heartbeat {HEARTBEAT_S:.1f}s); "
        f"{rows_at_reregistration}/150 rows done by then"
    )
    assert reregistered <= 2 * HEARTBEAT_S + 2.0  # two heartbeat intervals (+ polling and CPU slack)


def test_worker_node_crash_is_marked_unhealthy_and_the_other_replica_serves(fleet: HeadFleet) -> None:
    w2 = fleet.workers["w2"]
    model_pid = w2.server_pid("policy_model")
    out = fleet.tmp / "node-crash.jsonl"
    collector = collect(
        fleet.topology,
        fleet.node,
        out,
        agent="example_agent",
        head=fleet.node,
        background=True,
        extra=ROLLOUTS,
    )
    assert wait_until(lambda: len(read_rows(out)) >= 5 or collector.proc.poll() is not None, 60)
    # The machine dies: launcher and server at once, nobody deregisters. (The launcher is frozen first so it
    # neither restarts the server nor lets it notice its parent's death and deregister.)
    os.killpg(w2.spawned.pid, signal.SIGSTOP)
    fleet.topology.kill(w2.node, model_pid, signal.SIGKILL)
    os.killpg(w2.spawned.pid, signal.SIGKILL)
    killed_at = time.monotonic()

    def unhealthy() -> bool:
        return any(i["pid"] == model_pid and i["status"] == "unhealthy" for i in fleet.instances())

    assert wait_until(unhealthy, LEASE_S + 10), fleet.instances()
    to_unhealthy = time.monotonic() - killed_at
    _finish(fleet, collector, out, total=60)
    healthy_models = [
        i for i in fleet.instances() if i["process_name"] == "policy_model" and i["status"] == "healthy"
    ]
    assert [i["pid"] for i in healthy_models] == [fleet.workers["w1"].server_pid("policy_model")]
    print(f"node crash: marked unhealthy {to_unhealthy:.2f}s after kill -9 (lease {LEASE_S}s)")
    assert to_unhealthy <= LEASE_S + SWEEP_S + 3.0
