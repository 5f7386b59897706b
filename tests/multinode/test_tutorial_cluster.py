"""The tutorial's multi-node deployment on real separate network stacks (one namespace per node).

coord (10.213.0.1): ``ng_run`` of the tutorial's coordinator config (head, example_resources,
example_agent) plus an extra ``session_agent``; w1, w2: ``ng_run`` of the tutorial's worker config
(``policy_model``, scripted in place of vLLM) plus a ``session_counter`` replica each; w3: a spare host for a
container-style server and for failures.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.multinode.cluster import (
    BIN,
    HEAD_PORT,
    REPO,
    GymNode,
    by_name,
    collect,
    failures_path,
    instances,
    read_rows,
    render_config,
    start_gym_node,
    wait_until,
    write_jsonl,
)
from tests.multinode.netns import NetnsHttp, Node, Topology, iptables_unavailable_reason

pytestmark = pytest.mark.netns

LEASE_S = 3.0
SWEEP_S = LEASE_S / 4  # the head's default sweep interval
MODEL = "policy_model.responses_api_models.scripted_model"
DISPLAY_FIELDS = {
    "process_name",
    "server_type",
    "name",
    "host",
    "port",
    "url",
    "pid",
    "entrypoint",
    "config_path",
    "start_time",
    "dir_path",
    "status",
    "uptime_seconds",
}
CONTAINER_DICT = """
head_server:
  host: "{head}"
  port: 11000
container_resources:
  resources_servers:
    example_single_tool_call:
      entrypoint: app.py
      host: "{host}"
      port: 8080
"""


@dataclass
class Cluster:
    topology: Topology
    tmp: Path
    coord: GymNode
    workers: dict[str, GymNode]
    spare: Node

    @property
    def head_url(self) -> str:
        return f"http://{self.coord.node.ip}:{HEAD_PORT}"

    @property
    def http(self) -> NetnsHttp:
        return self.coord.http

    def instances(self) -> list[dict]:
        return instances(self.http, self.head_url)

    def on_host(self, ip: str) -> list[dict]:
        return [i for i in self.instances() if i["host"] == ip]


@pytest.fixture(scope="module")
def cluster(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    tmp = tmp_path_factory.mktemp("cluster")
    c = topology.add_node("coord")
    worker_nodes = [topology.add_node("w1"), topology.add_node("w2")]
    spare = topology.add_node("w3")
    coord_files = [
        render_config("coordinator-config.yaml", tmp, coordinator=c),
        render_config("session-agent.yaml", tmp, coordinator=c),
    ]
    coord = start_gym_node(
        topology,
        c,
        coord_files,
        tmp,
        overrides=[
            f"++registry_lease_s={LEASE_S}",
            "++registry_evict_after_s=30",
            "++client.cache_ttl_s=1",
        ],
    ).wait_ready(120)
    assert coord.ready["mode"] == "head", coord.ready  # auto mode: head_server is this node's address
    workers = {}
    for w in worker_nodes:  # the tutorial's order: coordinator first, then the workers
        files = [
            render_config("worker-config.yaml", tmp, coordinator=c, node=w),
            render_config("session-replica.yaml", tmp, coordinator=c, node=w),
        ]
        workers[w.name] = start_gym_node(
            topology, w, files, tmp, overrides=["++head_connect_timeout_s=60", f"++{MODEL}.latency_ms=20"]
        )
    for worker in workers.values():
        worker.wait_ready(120)
        assert worker.ready["mode"] == "worker", worker.ready  # auto mode: the head is another host
    return Cluster(topology, tmp, coord, workers, spare)


def call_by_name(cluster: Cluster, node: Node, name: str, path: str, body: dict) -> dict:
    script = str(Path(__file__).parent / "scripts" / "call_by_name.py")
    cluster.topology.guard(node, cluster.coord.node.ip)
    done = cluster.topology.run(
        node,
        [str(BIN / "python"), script, cluster.coord.node.ip, str(HEAD_PORT), name, path, json.dumps(body)],
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------------- the tutorial
def test_coordinator_lists_the_workers_policy_model(cluster: Cluster) -> None:
    listed = cluster.instances()
    models = sorted((i for i in listed if i["process_name"] == "policy_model"), key=lambda i: i["host"])
    assert [(m["host"], m["port"], m["url"]) for m in models] == [
        (w.node.ip, 8000, f"http://{w.node.ip}:8000") for w in cluster.workers.values()
    ]
    for model, worker in zip(models, cluster.workers.values(), strict=True):
        assert DISPLAY_FIELDS <= set(model), model
        assert (model["server_type"], model["name"], model["entrypoint"]) == (
            "responses_api_models",
            "scripted_model",
            "app.py",
        )
        assert model["status"] == "healthy" and model["uptime_seconds"] >= 0
        assert model["pid"] == worker.server_pid("policy_model")
    coord_ip = cluster.coord.node.ip
    assert {(i["process_name"], i["url"]) for i in listed if i["host"] == coord_ip} == {
        ("example_resources", f"http://{coord_ip}:8080"),
        ("example_agent", f"http://{coord_ip}:8081"),
        ("session_agent", f"http://{coord_ip}:8082"),
    }
    # The tutorial's verification curl, from a worker: the same live list.
    from_worker = instances(cluster.workers["w1"].http, cluster.head_url)
    assert {i["instance_id"] for i in from_worker} == {i["instance_id"] for i in listed}


def test_global_config_includes_remote_blocks_and_any_node_resolves_any_name(cluster: Cluster) -> None:
    resp = cluster.http.get(cluster.head_url + "/global_config_dict_yaml")
    config = yaml.safe_load(json.loads(resp.content))
    coord_ip = cluster.coord.node.ip
    assert config["head_server"] == {"host": coord_ip, "port": HEAD_PORT}
    model = config["policy_model"]["responses_api_models"]["scripted_model"]
    assert model["host"] in {w.node.ip for w in cluster.workers.values()} and model["port"] == 8000
    assert model["entrypoint"] == "app.py"
    assert config["session_counter"]["resources_servers"]["session_counter"]["port"] == 8090
    resources = config["example_resources"]["resources_servers"]["example_single_tool_call"]
    assert (resources["host"], resources["port"], resources["domain"]) == (coord_ip, 8080, "agent")
    # A script on a worker calls a coordinator server by name, through the head's config.
    answer = call_by_name(
        cluster, cluster.workers["w2"].node, "example_resources", "/get_weather", {"city": "Oslo"}
    )
    assert answer["status"] == 200 and answer["url"] == f"http://{coord_ip}:8080/get_weather"
    assert answer["body"]["weather_description"] == "The weather in Oslo is cold."


def test_rollouts_flow_coordinator_agent_to_worker_model_to_coordinator_resources(cluster: Cluster) -> None:
    out = cluster.tmp / "tutorial-rollouts.jsonl"
    done = collect(
        cluster.topology,
        cluster.coord.node,
        out,
        agent="example_agent",
        head=cluster.coord.node,
        extra=["+num_repeats=2", "+num_samples_in_parallel=4"],
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = read_rows(out)
    assert sorted((r["_ng_task_index"], r["_ng_rollout_index"]) for r in rows) == [
        (t, k) for t in range(5) for k in range(2)
    ]
    assert all(r["reward"] == 1.0 and r["agent_ref"] == {"name": "example_agent"} for r in rows)
    # the tool answer came from the coordinator's resources server, the call from the worker's model
    outputs = [item for r in rows for item in r["response"]["output"]]
    assert any(o["type"] == "function_call_output" and "is cold" in o["output"] for o in outputs)
    assert not read_rows(failures_path(out))
    metrics = json.loads(out.with_name(out.stem + "_aggregate_metrics.json").read_text())
    assert metrics[0]["key_metrics"]["mean/reward"] == 1.0


def test_container_server_with_only_config_dict_joins_and_serves(cluster: Cluster) -> None:
    topo, spare, coord_ip = cluster.topology, cluster.spare, cluster.coord.node.ip
    config_dict = CONTAINER_DICT.format(head=coord_ip, host="0.0.0.0")
    topo.guard_config_hosts(spare, yaml.safe_load(config_dict))
    env = {
        "NEMO_GYM_CONFIG_DICT": config_dict,
        "NEMO_GYM_CONFIG_PATH": None,
        "GYMFLEET_CONFIG_FILE": None,
        "GYMFLEET_EXTRA_ROOTS": None,
    }
    server = topo.spawn(
        spare,
        [str(BIN / "python"), "app.py"],
        env=env,
        label="container",
        cwd=REPO / "resources_servers" / "example_single_tool_call",
    )
    try:
        assert wait_until(lambda: bool(by_name(cluster.http, cluster.head_url, "container_resources")), 30), (
            server.log()
        )
        entry = by_name(cluster.http, cluster.head_url, "container_resources")[0]
        # bound to 0.0.0.0, advertised as the address that routes to the head
        assert (entry["host"], entry["url"]) == (spare.ip, f"http://{spare.ip}:8080")
        assert entry["pid"] == server.pid and entry["status"] == "healthy"
        answer = call_by_name(
            cluster, cluster.coord.node, "container_resources", "/get_weather", {"city": "Lima"}
        )
        assert answer["url"] == f"http://{spare.ip}:8080/get_weather"
        assert answer["body"]["weather_description"] == "The weather in Lima is cold."
    finally:
        server.stop(grace_s=10.0)
    assert server.proc.returncode == 0, server.log()
    assert not by_name(cluster.http, cluster.head_url, "container_resources")  # deregistered at once


def test_worker_that_cannot_reach_the_head_exits_naming_the_address(cluster: Cluster, tmp_path: Path) -> None:
    spare, coord = cluster.spare, cluster.coord.node
    files = [render_config("worker-config.yaml", tmp_path, coordinator=coord, node=spare)]
    start = time.monotonic()
    node = start_gym_node(
        cluster.topology,
        spare,
        files,
        tmp_path,
        overrides=["++head_server.port=11999", "++head_connect_timeout_s=2"],
    )
    assert node.spawned.proc.wait(60) == 1
    log = node.spawned.log()
    assert "Could not connect to head server" in log and f"http://{coord.ip}:11999" in log, log[-3000:]
    assert time.monotonic() - start >= 2.0


def test_loopback_address_with_a_remote_head_is_refused_at_startup(cluster: Cluster, tmp_path: Path) -> None:
    spare, coord = cluster.spare, cluster.coord.node
    files = [render_config("worker-config.yaml", tmp_path, coordinator=coord, node=spare)]
    node = start_gym_node(cluster.topology, spare, files, tmp_path, overrides=[f"++{MODEL}.host=127.0.0.1"])
    assert node.spawned.proc.wait(60) == 1
    log = node.spawned.log()
    assert "policy_model" in log and "'127.0.0.1'" in log and "loopback" in log, log[-3000:]
    # The same misconfiguration in a container (python app.py, no launcher) fails at startup too.
    config_dict = CONTAINER_DICT.format(head=coord.ip, host="127.0.0.1")
    server = cluster.topology.spawn(
        spare,
        [str(BIN / "python"), "app.py"],
        label="container-lo",
        env={"NEMO_GYM_CONFIG_DICT": config_dict, "NEMO_GYM_CONFIG_PATH": None},
        cwd=REPO / "resources_servers" / "example_single_tool_call",
    )
    assert server.proc.wait(60) == 1
    assert "Refusing to advertise '127.0.0.1'" in server.log(), server.log()[-3000:]


# ------------------------------------------------------------------------------------------------ replicas
def test_two_replicas_share_load_and_each_rollout_keeps_one_replica(cluster: Cluster) -> None:
    bump = {"type": "function", "name": "bump", "parameters": {"type": "object", "properties": {}}}
    data = write_jsonl(
        cluster.tmp / "bump.jsonl",
        [{"responses_create_params": {"input": f"bump it {i}", "tools": [bump]}} for i in range(8)],
    )
    out = cluster.tmp / "replicas.jsonl"
    done = collect(
        cluster.topology,
        cluster.coord.node,
        out,
        agent="session_agent",
        head=cluster.coord.node,
        input_path=data,
        extra=["+num_repeats=4", "+num_samples_in_parallel=8"],
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = read_rows(out)
    assert len(rows) == 32
    # seed_session -> bump -> verify on one process: the per-session count is exactly 1 in every rollout
    assert [r["reward"] for r in rows] == [1.0] * 32
    assert len({r["session_id"] for r in rows}) == 32
    replicas = {w.server_pid("session_counter"): name for name, w in cluster.workers.items()}
    share = {
        name: sum(1 for r in rows if replicas.get(r["pid"]) == name) / len(rows) for name in cluster.workers
    }
    print(f"replica share: {share}")
    assert sum(share.values()) == 1.0
    assert min(share.values()) >= 0.25, share  # each replica carries a substantial share


# ------------------------------------------------------------------------------------------------ faults
def test_partition_between_worker_and_head_marks_it_unhealthy_and_heals(cluster: Cluster) -> None:
    reason = iptables_unavailable_reason()
    if reason:
        pytest.skip(reason)
    topo, w2, coord = cluster.topology, cluster.workers["w2"].node, cluster.coord.node
    assert len(cluster.on_host(w2.ip)) == 2
    start = time.monotonic()
    topo.drop(w2, coord)
    try:
        assert wait_until(
            lambda: all(i["status"] == "unhealthy" for i in cluster.on_host(w2.ip)), LEASE_S + 10
        )
        to_unhealthy = time.monotonic() - start
        # Meanwhile the coordinator's agent routes around the cut-off worker: w1's model serves every rollout.
        out = cluster.tmp / "partition.jsonl"
        done = collect(topo, coord, out, agent="example_agent", head=coord, extra=["+limit=3"], timeout=60)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert [r["reward"] for r in read_rows(out)] == [1.0] * 3
    finally:
        healed_at = time.monotonic()
        topo.heal(w2, coord)
    assert wait_until(lambda: [i["status"] for i in cluster.on_host(w2.ip)] == ["healthy"] * 2, 20), (
        cluster.on_host(w2.ip)
    )
    to_healthy = time.monotonic() - healed_at
    print(
        f"partition: unhealthy after {to_unhealthy:.2f}s (lease {LEASE_S}s), "
        f"healthy {to_healthy:.2f}s after heal"
    )
    assert to_unhealthy <= LEASE_S + SWEEP_S + 3.0  # within the lease (+ sweep and polling slack)


def test_kill9_of_a_worker_server_is_replaced_and_the_collection_accounts_for_every_row(
    cluster: Cluster,
) -> None:
    topo, w1, coord = cluster.topology, cluster.workers["w1"].node, cluster.coord.node
    old = next(i for i in cluster.on_host(w1.ip) if i["process_name"] == "policy_model")
    out = cluster.tmp / "kill9.jsonl"
    collector = collect(
        topo,
        coord,
        out,
        agent="example_agent",
        head=coord,
        background=True,
        extra=["+num_repeats=20", "+num_samples_in_parallel=4"],
    )
    try:
        assert wait_until(lambda: len(read_rows(out)) >= 10 or collector.proc.poll() is not None, 60)
        killed_at = time.monotonic()
        topo.kill(w1, old["pid"], signal.SIGKILL)

        def old_gone_or_unhealthy() -> bool:
            return not any(
                i["pid"] == old["pid"] and i["status"] == "healthy" for i in cluster.on_host(w1.ip)
            )

        assert wait_until(old_gone_or_unhealthy, LEASE_S + 10), cluster.on_host(w1.ip)
        to_unhealthy = time.monotonic() - killed_at

        def replaced() -> bool:
            now = [i for i in cluster.on_host(w1.ip) if i["process_name"] == "policy_model"]
            return len(now) == 1 and now[0]["pid"] != old["pid"] and now[0]["status"] == "healthy"

        assert wait_until(replaced, LEASE_S + 15), cluster.on_host(w1.ip)
        to_replaced = time.monotonic() - killed_at
        assert collector.proc.wait(120) == 0, collector.log()[-3000:]
    finally:
        collector.stop()
    rows, failed = read_rows(out), read_rows(failures_path(out))
    assert len(rows) + len(failed) == 100  # every row accounted for
    assert not failed, failed[:2]
    assert all(r["reward"] == 1.0 for r in rows)
    new = next(i for i in cluster.on_host(w1.ip) if i["process_name"] == "policy_model")
    assert new["url"] == old["url"]  # the launcher kept the socket: same address
    answer = cluster.http.post(new["url"] + "/v1/responses", json={"input": "hello"}, timeout=10)
    assert answer.status_code == 200  # the replacement takes traffic
    print(
        f"kill -9 of a worker's server: off the healthy list after {to_unhealthy:.2f}s (lease {LEASE_S}s), "
        f"replacement registered after {to_replaced:.2f}s"
    )
    assert to_unhealthy <= LEASE_S + SWEEP_S + 3.0  # within the lease (+ sweep and polling slack)
