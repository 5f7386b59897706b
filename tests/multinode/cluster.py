"""Start gymfleet nodes in test namespaces: the tutorial's configs with test IPs, ``ng_run`` per node."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.multinode.netns import NetnsHttp, Node, Spawned, Topology

REPO = Path(__file__).resolve().parents[2]
CONFIGS = Path(__file__).resolve().parent / "configs"
BIN = Path(sys.executable).parent
TEST_SERVERS_ROOT = REPO / "tests" / "servers"
EXAMPLE_DATA = REPO / "resources_servers/example_single_tool_call/data/example.jsonl"
TUTORIAL_COORDINATOR_IP = "192.168.1.100"
TUTORIAL_WORKER_IP = "192.168.1.101"
HEAD_PORT = 11000
ENV = {"GYMFLEET_EXTRA_ROOTS": str(TEST_SERVERS_ROOT)}


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``predicate`` until true or ``timeout_s`` passes (bounded in time, and so in count)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


def render_config(name: str, out_dir: Path, *, coordinator: Node, node: Node | None = None) -> Path:
    """``configs/<name>`` with the tutorial's IPs replaced by the test's; returns the new path."""
    text = (CONFIGS / name).read_text()
    text = text.replace(TUTORIAL_COORDINATOR_IP, coordinator.ip)
    if node is not None:
        text = text.replace(TUTORIAL_WORKER_IP, node.ip)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{(node or coordinator).name}-{name}"
    path.write_text(text)
    return path


@dataclass
class GymNode:
    """One ``ng_run`` (or ``gymfleet run``) process in a namespace, with its ready file."""

    topology: Topology
    node: Node
    spawned: Spawned
    ready_file: Path

    @property
    def ready(self) -> dict[str, Any]:
        return json.loads(self.ready_file.read_text())

    @property
    def http(self) -> NetnsHttp:
        return self.topology.http(self.node)

    def wait_ready(self, timeout_s: float = 60.0) -> GymNode:
        ok = wait_until(
            lambda: self.ready_file.exists() or self.spawned.proc.poll() is not None, timeout_s, 0.1
        )
        if not self.ready_file.exists():
            raise AssertionError(
                f"{self.node.name} not ready (ok={ok}, rc={self.spawned.proc.poll()}):\n"
                f"{self.spawned.log()[-5000:]}"
            )
        return self

    def server_pid(self, name: str) -> int:
        return int(self.ready["servers"][name]["pid"])


def start_gym_node(
    topology: Topology,
    node: Node,
    config_files: Sequence[Path],
    tmp: Path,
    *,
    overrides: Sequence[str] = (),
    command: str = "ng_run",
    extra_args: Sequence[str] = (),
    label: str = "ng_run",
) -> GymNode:
    """Start ``ng_run "+config_paths=[...]" ...`` (the tutorial's command) inside ``node``'s namespace."""
    for path in config_files:
        topology.guard_config_hosts(node, yaml.safe_load(path.read_text()))
    ready_file = tmp / f"ready-{node.name}-{label}-{time.monotonic_ns()}.json"
    log_dir = tmp / "logs" / node.name
    if command == "ng_run":
        argv = [str(BIN / "ng_run"), "+config_paths=[" + ",".join(str(p) for p in config_files) + "]"]
    else:
        argv = [str(BIN / "gymfleet"), "run", *extra_args]
        for path in config_files:
            argv += ["-c", str(path)]
    argv += [f"++ready_file={ready_file}", f"++nemo_gym_log_dir={log_dir}", *overrides]
    spawned = topology.spawn(node, argv, env=ENV, cwd=REPO, label=label)
    return GymNode(topology, node, spawned, ready_file)


def instances(http: NetnsHttp, head_url: str) -> list[dict[str, Any]]:
    resp = http.get(head_url + "/server_instances", timeout=5)
    resp.raise_for_status()
    return resp.json()


def by_name(http: NetnsHttp, head_url: str, name: str) -> list[dict[str, Any]]:
    return [i for i in instances(http, head_url) if i["process_name"] == name]


def collect(
    topology: Topology,
    node: Node,
    out: Path,
    *,
    agent: str,
    head: Node,
    input_path: Path = EXAMPLE_DATA,
    extra: Sequence[str] = (),
    timeout: float = 90.0,
    background: bool = False,
) -> Any:
    """``ng_collect_rollouts`` inside ``node``'s namespace, talking to the head on ``head``."""
    argv = [
        str(BIN / "ng_collect_rollouts"),
        f"+agent_name={agent}",
        f"+input_jsonl_fpath={input_path}",
        f"+output_jsonl_fpath={out}",
        f"++head_server.host={head.ip}",
        f"++head_server.port={HEAD_PORT}",
        "+quiet=true",
        *extra,
    ]
    topology.guard(node, head.ip)
    if background:
        return topology.spawn(node, argv, env=ENV, cwd=REPO, label="collect")
    return topology.run(node, argv, timeout=timeout, env=ENV, cwd=REPO)


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def failures_path(out: Path) -> Path:
    return out.with_name(out.stem + "_failures.jsonl")


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
