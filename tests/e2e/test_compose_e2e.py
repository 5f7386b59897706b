"""The generated Docker Compose file, run by Debian's docker-compose on a real engine: head + one service per
server (two replicas of the resources server), registration through the head's service name, rollouts
collected inside the compose network, and a clean ``down``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from gymfleet.deploy import generate
from tests.e2e.engines import IMAGE, DockerEngine, free_port
from tests.fleet_helpers import AGENT, EXAMPLE_CONFIG, REPO, SCRIPTED_CONFIG, wait_until

pytestmark = pytest.mark.slow

PROJECT = "gfc"
DATA_IN_IMAGE = "/app/resources_servers/example_single_tool_call/data/example.jsonl"


def test_compose_fleet_comes_up_collects_and_goes_down(
    docker_with_image: DockerEngine, tmp_path: Path
) -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose not installed (scripts/e2e installs it)")
    engine = docker_with_image
    head_port = free_port()
    outdir = tmp_path / "compose"
    generate(
        "compose",
        [str(REPO / EXAMPLE_CONFIG), str(REPO / SCRIPTED_CONFIG)],
        outdir,
        {
            "name": PROJECT,
            "image": IMAGE,
            "head_port": head_port,
            "replicas": {"example_single_tool_call": 2},
        },
    )
    env = {**os.environ, "DOCKER_HOST": engine.host, "COMPOSE_PROJECT_NAME": PROJECT}

    def compose(*args: str, timeout_s: float = 180.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool, *args], cwd=outdir, env=env, capture_output=True, text=True, timeout=timeout_s
        )

    started = time.monotonic()
    try:
        up = compose("up", "-d")
        assert up.returncode == 0, up.stdout + up.stderr
        head_url = f"http://127.0.0.1:{head_port}"  # published on the host's loopback only

        def registered() -> list[dict]:
            try:
                return httpx.get(head_url + "/server_instances", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                return []

        def all_up() -> bool:
            names = [i["process_name"] for i in registered()]
            return names.count("example_single_tool_call") == 2 and {AGENT, "policy_model"} <= set(names)

        if not wait_until(all_up, 120.0, 1.0):
            logs = compose("logs", "--no-color", "--tail", "40")
            pytest.fail(f"the compose fleet never registered: {registered()}\n{logs.stdout[-6000:]}")
        ready_s = time.monotonic() - started
        urls = {i["url"] for i in registered() if i["process_name"] == "example_single_tool_call"}
        assert len(urls) == 2, urls  # two replicas, each advertising its own container address

        # Collect inside the compose network (containers reach each other; the host only talks to loopback).
        collect = compose(
            "exec",
            "-T",
            f"{PROJECT}-head",
            "python",
            "-m",
            "gymfleet.deploy.container",
            "collect",
            "--head",
            f"{PROJECT}-head:{head_port}",
            "--agent",
            AGENT,
            "--input",
            DATA_IN_IMAGE,
            "--output",
            "/tmp/rollouts.jsonl",
            "--num-repeats",
            "2",
            "--quiet",
        )
        assert collect.returncode == 0, collect.stdout[-3000:] + collect.stderr[-3000:]
        rows = compose("exec", "-T", f"{PROJECT}-head", "cat", "/tmp/rollouts.jsonl").stdout.splitlines()
        rewards = [json.loads(line)["reward"] for line in rows if line.strip()]
        assert rewards and all(r == 1.0 for r in rewards), rows[:2]

        def healthy() -> bool:
            ps = compose("ps").stdout
            return "(healthy)" in ps and "starting" not in ps and "unhealthy" not in ps

        assert wait_until(healthy, 60.0, 2.0), compose("ps").stdout
    finally:
        down = compose("down", "-t", "15", "--remove-orphans")
    assert down.returncode == 0, down.stderr
    project_filter = f"label=com.docker.compose.project={PROJECT}"
    left = engine.docker("ps", "-aq", "--filter", project_filter).stdout.split()
    assert not left
    print(
        "compose e2e timings:",
        json.dumps({"ready_s": round(ready_s, 1), "total_s": round(time.monotonic() - started, 1)}),
    )
