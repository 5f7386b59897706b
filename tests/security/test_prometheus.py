"""A real Prometheus (Debian's ``prometheus``) scrapes a running fleet with the fleet token, and its query API
shows the rollout counter increasing as rollouts run."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fleet_helpers import (
    AGENT,
    EXAMPLE_CONFIG,
    EXAMPLE_DATA,
    SCRIPTED_CONFIG,
    run_fleet_process,
    stop_process_group,
)
from tests.security.fleet import config_path

PROMETHEUS = shutil.which("prometheus")
TOKEN = "prom-fleet-token-0a1b2c3d4e5f"  # pragma: allowlist secret
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.skipif(PROMETHEUS is None,
                                reason="needs Debian's prometheus package (apt-get install prometheus)")


def free_port() -> int:
    # Prometheus cannot listen on port 0: bind, read, release (loopback only; the race is acceptable in a test).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_prometheus(tmp: Path, targets: list[str]) -> Iterator[str]:
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "gymfleet",
            "authorization": {"type": "Bearer", "credentials": TOKEN},
            "static_configs": [{"targets": targets}],
        }],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "prometheus did not become ready in 30s"
            time.sleep(0.2)
        yield url
    finally:
        stop_process_group(proc)  # type: ignore[arg-type]
        log.close()


def query(prom: str, expr: str) -> float | None:
    data = httpx.get(prom + "/api/v1/query", params={"query": expr}, timeout=5).json()
    assert data["status"] == "success", data
    result = data["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_for_value(prom: str, expr: str, at_least: float, timeout_s: float = 20.0) -> float:
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        seen = query(prom, expr)
        if seen is not None and seen >= at_least:
            return seen
        time.sleep(0.3)
    raise AssertionError(f"{expr} = {seen}, expected >= {at_least} within {timeout_s}s")


def test_prometheus_scrapes_the_fleet_and_sees_rollouts_increase(tmp_path):
    (tmp_path / "secure.yaml").write_text(yaml.safe_dump({"fleet_token": TOKEN}))
    args = ["-c", config_path(EXAMPLE_CONFIG), "-c", config_path(SCRIPTED_CONFIG), "-c", str(tmp_path / "secure.yaml"),
            "++head_server.port=0"]
    rows = [json.loads(line) for line in EXAMPLE_DATA.read_text().splitlines()]
    with run_fleet_process(tmp_path, args, cwd=tmp_path) as fleet:
        urls = [fleet.head_url, *(s["url"] for s in fleet.ready["servers"].values())]
        targets = [u.split("//", 1)[1] for u in urls]
        with running_prometheus(tmp_path, targets) as prom:
            wait_for_value(prom, 'count(up{job="gymfleet"} == 1)', len(targets))  # every target scraped with the token
            expr = f'sum(gymfleet_rollouts_finished_total{{agent="{AGENT}",source="agent"}})'
            for row in rows[:2]:
                assert httpx.post(fleet.url(AGENT) + "/run", json=row, headers=AUTH, timeout=30).status_code == 200
            first = wait_for_value(prom, expr, 2)
            for row in rows[:3]:
                assert httpx.post(fleet.url(AGENT) + "/run", json=row, headers=AUTH, timeout=30).status_code == 200
            second = wait_for_value(prom, expr, first + 3)
            assert second > first
            assert wait_for_value(prom, 'sum(gymfleet_registry_instances{status="healthy"})', 3) == 3
            # the agent's tool calls, counted by route template on the resources server
            wait_for_value(prom, 'sum(gymfleet_http_requests_total{route="/get_weather",status="200"})', 5)
