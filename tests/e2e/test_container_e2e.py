"""The gymfleet image on a real Docker engine: a resources server container, configured only by
``NEMO_GYM_CONFIG_DICT``, registers with a head on the host and serves the rollouts of a host fleet."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.engines import IMAGE, DockerEngine
from tests.fleet_helpers import (
    AGENT,
    EXAMPLE_CONFIG,
    EXAMPLE_DATA,
    REPO,
    SCRIPTED_CONFIG,
    run_fleet_process,
    wait_until,
)

pytestmark = pytest.mark.slow

RESOURCES = "example_single_tool_call"


def _registered(head_url: str, name: str) -> list[dict]:
    try:
        return [
            i
            for i in httpx.get(head_url + "/server_instances", timeout=5).json()
            if i["process_name"] == name
        ]
    except httpx.HTTPError:
        return []


def _agent_only_config(tmp: Path) -> Path:
    """The example's agent without its resources server: the agent must find it through the head."""
    example = yaml.safe_load((REPO / EXAMPLE_CONFIG).read_text())
    path = tmp / "agent.yaml"
    path.write_text(yaml.safe_dump({AGENT: example[AGENT]}))
    return path


def test_resources_server_container_registers_and_serves_rollouts(
    docker_with_image: DockerEngine, tmp_path: Path
) -> None:
    engine = docker_with_image
    timings: dict[str, float] = {}
    started = time.monotonic()
    user = engine.docker("run", "--rm", "--pull", "never", "--entrypoint", "id", IMAGE, "-u").stdout.strip()
    assert user == "10001", "the image must run as a non-root user"
    with run_fleet_process(
        tmp_path, ["--head-only", "++head_server.host=127.0.0.1", "++head_server.port=0"]
    ) as head:
        head_port = int(head.head_url.rsplit(":", 1)[1])
        # The tutorial's shape: the only input is NEMO_GYM_CONFIG_DICT (no instance name, no dry_run).
        config_dict = yaml.safe_dump(
            {
                "head_server": {"host": "127.0.0.1", "port": head_port},
                RESOURCES: {
                    "resources_servers": {
                        RESOURCES: {
                            "entrypoint": "app.py",
                            "domain": "agent",
                            "host": "127.0.0.1",
                            "port": 0,
                        }
                    }
                },
            }
        )
        t0 = time.monotonic()
        engine.docker(
            "run",
            "-d",
            "--name",
            "gf-resources",
            "--pull",
            "never",
            "--network",
            "host",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--cap-drop",
            "ALL",
            "-e",
            f"NEMO_GYM_CONFIG_DICT={config_dict}",
            IMAGE,
        )
        if not wait_until(lambda: bool(_registered(head.head_url, RESOURCES)), 60.0, 0.25):
            logs = engine.docker("logs", "gf-resources", check=False)
            pytest.fail(f"container never registered:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        timings["container_ready_s"] = time.monotonic() - t0
        (instance,) = _registered(head.head_url, RESOURCES)
        # served from the image (its code lives under /app), as a child of the entrypoint (PID 1)
        assert instance["dir_path"] == f"/app/resources_servers/{RESOURCES}" and instance["pid"] != 1
        assert instance["host"] == "127.0.0.1"

        with run_fleet_process(
            tmp_path,
            [
                "--worker",
                "-c",
                str(_agent_only_config(tmp_path)),
                "-c",
                SCRIPTED_CONFIG,
                "++head_server.host=127.0.0.1",
                f"++head_server.port={head_port}",
            ],
        ) as fleet:
            row = json.loads(EXAMPLE_DATA.read_text().splitlines()[0])
            for _ in range(3):
                resp = httpx.post(fleet.url(AGENT) + "/run", json=row, timeout=60)
                assert resp.status_code == 200, resp.text
                body = resp.json()
                assert body["reward"] == 1.0
                tool_output = json.loads(body["response"]["output"][1]["output"])
                assert tool_output["weather_description"] == "The weather in sf is cold."

        def healthy() -> bool:
            state = engine.docker("inspect", "-f", "{{.State.Health.Status}}", "gf-resources", check=False)
            return state.stdout.strip() == "healthy"

        assert wait_until(healthy, 40.0, 1.0), "the image HEALTHCHECK never reported healthy"
        t0 = time.monotonic()
        engine.docker("stop", "-t", "15", "gf-resources", timeout_s=60)
        timings["container_stop_s"] = time.monotonic() - t0
        exit_code = engine.docker("inspect", "-f", "{{.State.ExitCode}}", "gf-resources").stdout.strip()
        assert exit_code == "0", engine.docker("logs", "gf-resources", check=False).stderr[-3000:]
        assert wait_until(lambda: not _registered(head.head_url, RESOURCES), 10.0, 0.2), (
            "a stopped container must deregister from the head"
        )
    engine.docker("rm", "-f", "gf-resources", check=False)
    timings["total_s"] = time.monotonic() - started
    print("container e2e timings:", json.dumps({k: round(v, 1) for k, v in timings.items()}))
