"""The head's dashboard: content negotiation on ``/``, the data endpoint, and the page rendered by headless Chromium
against a live fleet (the screenshot is kept; set GYMFLEET_UPDATE_DOCS=1 to refresh docs/dashboard.png)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from gymfleet.head.dashboard import parse_counters
from tests.fleet_helpers import AGENT, EXAMPLE_CONFIG, EXAMPLE_DATA, REPO, SCRIPTED_CONFIG, run_fleet_process
from tests.security.apps import TOKEN, asgi_client, fleet_config, head_app
from tests.security.fleet import config_path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


async def test_root_negotiates_between_liveness_json_and_the_page():
    _, app = head_app(fleet_config(fleet_token=TOKEN))
    async with asgi_client(app) as client:
        assert (await client.get("/")).json() == {"status": "ok"}
        assert (await client.get("/", headers={"Accept": "application/json"})).json() == {"status": "ok"}
        page = await client.get("/", headers=BROWSER)  # no token needed: the page holds no data
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        nonce = csp.split("'nonce-", 1)[1].split("'", 1)[0]
        assert f'<script nonce="{nonce}">' in page.text and "default-src 'none'" in csp
        assert "/*__JS__*/" not in page.text and "fleet-body" in page.text and "https://" not in page.text
        assert TOKEN not in page.text
        assert (await client.get("/dashboard", headers=BROWSER)).status_code == 401
        assert (await client.get("/dashboard/data")).status_code == 401
        assert (await client.get("/dashboard", headers={**BROWSER, **AUTH})).status_code == 200


async def test_data_lists_instances_with_rates_and_ray_status():
    with socket.socket() as ray_gcs:  # something listening where Ray's GCS would be
        ray_gcs.bind(("127.0.0.1", 0))
        ray_gcs.listen()
        address = f"127.0.0.1:{ray_gcs.getsockname()[1]}"
        _, app = head_app(fleet_config(ray_head_node_address=address))
        async with asgi_client(app) as client:
            body = {"name": "gone", "server_type": "responses_api_models", "impl": "x", "host": "127.0.0.1",
                    "port": 9, "url": "http://127.0.0.1:9", "node": "n1"}
            assert (await client.post("/registry/register", json=body)).status_code == 200
            data = (await client.get("/dashboard/data")).json()
    assert data["ray"] == {"address": address, "reachable": True}
    assert data["totals"]["instances"] == 1 and data["totals"]["healthy"] == 1
    row = data["instances"][0]
    assert row["process_name"] == "gone" and row["node"] == "n1" and row["rates"] is None  # unreachable: no rates
    assert {"uptime_seconds", "last_heartbeat_age_seconds", "status", "url"} <= set(row)


def test_parse_counters_sums_one_server_and_skips_scrapes():
    text = "\n".join([
        'gymfleet_http_requests_total{method="POST",route="/run",server="a",status="200"} 7.0',
        'gymfleet_http_requests_total{method="POST",route="/run",server="a",status="502"} 2.0',
        'gymfleet_http_requests_total{method="GET",route="/metrics",server="a",status="200"} 40.0',
        'gymfleet_http_requests_total{method="POST",route="/run",server="b",status="200"} 100.0',
        'gymfleet_rollouts_finished_total{agent="a",source="agent"} 7.0',
        'gymfleet_rollouts_failed_total{agent="a",failure_class="upstream_error",source="agent"} 2.0',
        'gymfleet_rollouts_finished_total{agent="a",source="collector"} 50.0',
    ])
    counters = parse_counters(text, "a")
    assert (counters.requests, counters.errors, counters.rollouts_ok, counters.rollouts_failed) == (9, 2, 7, 2)


def chromium(tmp: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp / 'chromium-profile'}", "--window-size=1400,900", "--hide-scrollbars",
            "--virtual-time-budget=6000", *extra, url]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=tmp)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)")
def test_dashboard_renders_the_live_fleet_in_headless_chromium(tmp_path):
    with socket.socket() as ray_gcs:
        ray_gcs.bind(("127.0.0.1", 0))
        ray_gcs.listen()
        secure = {"fleet_token": TOKEN, "ray_head_node_address": f"127.0.0.1:{ray_gcs.getsockname()[1]}"}
        (tmp_path / "secure.yaml").write_text(yaml.safe_dump(secure))
        args = ["-c", config_path(EXAMPLE_CONFIG), "-c", config_path(SCRIPTED_CONFIG), "-c",
                str(tmp_path / "secure.yaml"), "++head_server.port=0"]
        rows = [json.loads(line) for line in EXAMPLE_DATA.read_text().splitlines()]
        with run_fleet_process(tmp_path, args, cwd=tmp_path) as fleet, _traffic(fleet.url(AGENT), rows):
            with httpx.Client(headers=AUTH, timeout=10) as client:  # two samples >1 s apart: live rates
                client.get(fleet.head_url + "/dashboard/data")
                time.sleep(1.5)
                client.get(fleet.head_url + "/dashboard/data")
            page = f"{fleet.head_url}/#token={TOKEN}"
            dom = chromium(tmp_path, page, "--dump-dom")
            assert dom.returncode == 0, dom.stderr[-2000:]
            for name in ("example_single_tool_call", AGENT, "policy_model"):
                assert f'data-name="{name}"' in dom.stdout, dom.stdout[-3000:]
            assert "healthy" in dom.stdout and "reachable" in dom.stdout and ">live<" in dom.stdout
            assert "no data yet" not in dom.stdout
            shot = tmp_path / "dashboard.png"
            result = chromium(tmp_path, page, f"--screenshot={shot}")
            assert result.returncode == 0 and shot.stat().st_size > 10_000, result.stderr[-2000:]
    if os.environ.get("GYMFLEET_UPDATE_DOCS"):
        shutil.copyfile(shot, REPO / "docs" / "dashboard.png")


@contextlib.contextmanager
def _traffic(agent_url: str, rows: list[dict]):
    """Rollouts in the background while the page is looked at (bounded: at most 400 requests or until stopped)."""
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(headers=AUTH, timeout=10) as client:
            for n in range(400):
                if stop.is_set():
                    return
                with contextlib.suppress(httpx.HTTPError):
                    client.post(agent_url + "/run", json=rows[n % len(rows)])
                time.sleep(0.02)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(15)
