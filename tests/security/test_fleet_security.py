"""A real fleet with a token and secrets in env.yaml: every route refuses strangers, the fleet still works, and no
secret shows up in a response, a log file, ng_status, ng_dump_config, or any process's command line or environment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.fleet_helpers import AGENT, EXAMPLE_CONFIG, EXAMPLE_DATA, SCRIPTED_CONFIG, run_fleet_process
from tests.security.fleet import config_path, descendants, exposed_text

TOKEN = "tok-7c1e9a2b4d6f8e0a1c3b5d7f"  # pragma: allowlist secret
API_KEY = "sk-fleet-secret-0123456789abcdef"  # pragma: allowlist secret
JUDGE = "9f8e7d6c5b4a392817065544"  # pragma: allowlist secret
SECRETS = (TOKEN, API_KEY, JUDGE)
AUTH = {"Authorization": f"Bearer {TOKEN}"}

LEAKY_MODEL = """
leaky_model:
  responses_api_models:
    openai_model:
      entrypoint: app.py
      openai_base_url: http://127.0.0.1:9/v1?key=${judge_blob}
      openai_api_key: ${policy_api_key}
      openai_model: m
      request_timeout_s: 5
"""


def assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"secret leaked in {where}"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("secure")
    (tmp / "env.yaml").write_text(f"fleet_token: {TOKEN}\npolicy_api_key: {API_KEY}\njudge_blob: {JUDGE}\n")
    (tmp / "leaky.yaml").write_text(LEAKY_MODEL)
    args = ["-c", config_path(EXAMPLE_CONFIG), "-c", config_path(SCRIPTED_CONFIG), "-c", str(tmp / "leaky.yaml"),
            "++head_server.port=0", "++model_endpoint_readiness_timeout_seconds=0"]
    with run_fleet_process(tmp, args, cwd=tmp) as running:
        running.tmp = tmp  # type: ignore[attr-defined]
        yield running


def urls(fleet) -> dict[str, str]:
    return {"head_server": fleet.head_url, **{name: s["url"] for name, s in fleet.ready["servers"].items()}}


def test_every_route_of_every_process_refuses_strangers(fleet):
    with httpx.Client(timeout=10) as client:
        for name, url in urls(fleet).items():
            schema = client.get(url + "/openapi.json", headers=AUTH)
            assert schema.status_code == 200, (name, schema.text)
            paths = [(m.upper(), p) for p, ops in schema.json()["paths"].items() for m in ops]
            paths += [("GET", "/metrics"), ("GET", "/docs"), ("GET", "/openapi.json")]
            for method, path in paths:
                if (method, path) == ("GET", "/"):
                    continue  # liveness
                for headers in ({}, {"Authorization": "Bearer wrong"}):
                    resp = client.request(method, url + path, headers=headers, json={})
                    assert resp.status_code == 401, (name, method, path, resp.status_code)
            assert client.get(url + "/").json() == {"status": "ok"}


def test_rollouts_work_with_the_token_carried_automatically(fleet):
    row = json.loads(EXAMPLE_DATA.read_text().splitlines()[0])
    resp = httpx.post(fleet.url(AGENT) + "/run", json=row, headers=AUTH, timeout=30)
    assert resp.status_code == 200 and resp.json()["reward"] == 1.0  # agent -> model, resources: token sent
    assert_clean(resp.text, "/run")


def test_no_secret_in_responses_logs_or_process_tables(fleet):
    with httpx.Client(timeout=30, headers=AUTH) as client:
        failed = client.post(fleet.url("leaky_model") + "/v1/responses", json={"input": "hi"})
        assert failed.status_code == 502 and "127.0.0.1:9" in failed.text  # the URL is named, its key is not
        assert_clean(failed.text, "the leaky model's 502")
        for name, url in urls(fleet).items():
            schema = client.get(url + "/openapi.json").json()
            gets = [p for p, ops in schema["paths"].items() if "get" in ops and "{" not in p]
            for path in [*gets, "/metrics"]:
                if path == "/global_config_dict_yaml":
                    continue  # served in full to token holders by design
                assert_clean(client.get(url + path).text, f"{name} GET {path}")
        with httpx.Client(timeout=10) as stranger:
            assert_clean(stranger.get(fleet.head_url + "/", headers={"Accept": "text/html"}).text, "dashboard page")
    logs = [fleet.log_path, *sorted((fleet.tmp / "logs").glob("*.log"))]
    assert len(logs) >= 5
    for log in logs:
        assert_clean(log.read_text(errors="replace"), str(log))
    leaky_log = (fleet.tmp / "logs" / "leaky_model.log").read_text()
    assert "127.0.0.1:9/v1?key=****" in leaky_log  # the secret reached a log call and was masked
    pids = descendants(fleet.proc.pid)
    assert len(pids) >= 5  # launcher, zygote or not, four servers
    for pid in pids:
        assert_clean(exposed_text(pid), f"/proc/{pid}/cmdline+environ")


def test_status_and_dump_config_use_the_token_and_hide_secrets(fleet):
    head = fleet.head_url.split("//", 1)[1]
    cli = [sys.executable, "-m", "gymfleet.cli.main"]
    status = subprocess.run([*cli, "status", "--head", head, "--json"], cwd=fleet.tmp, capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert {i["process_name"] for i in json.loads(status.stdout)} >= {AGENT, "policy_model", "leaky_model"}
    assert_clean(status.stdout + status.stderr, "ng_status")
    legacy = subprocess.run(
        [sys.executable, "-c", "import sys; from gymfleet.cli.legacy import ng_status; sys.exit(ng_status())",
         f"++head_server.host={head.rsplit(':', 1)[0]}", f"++head_server.port={head.rsplit(':', 1)[1]}"],
        cwd=fleet.tmp, capture_output=True, text=True, timeout=60)
    assert legacy.returncode == 0, legacy.stderr
    assert_clean(legacy.stdout + legacy.stderr, "legacy ng_status")
    stranger = subprocess.run([*cli, "status", "--head", head, "--json"], cwd=Path(fleet.tmp).parent,
                              capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert stranger.returncode == 1 and "401" in stranger.stderr
    dump = subprocess.run([*cli, "config", "-c", config_path(EXAMPLE_CONFIG), "-c", str(fleet.tmp / "leaky.yaml")],
                          cwd=fleet.tmp, capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    assert "key=****" in dump.stdout
    assert_clean(dump.stdout + dump.stderr, "ng_dump_config")


def test_token_from_the_environment_is_scrubbed_from_every_process(tmp_path):
    """$GYMFLEET_TOKEN moves into the 0600 config file; the launcher wipes it from its own /proc/<pid>/environ before
    the zygote forks, and children never get it in their environment."""
    env = {"GYMFLEET_TOKEN": TOKEN, "GYMFLEET_SESSION_SECRET": JUDGE}
    args = ["-c", config_path(EXAMPLE_CONFIG), "-c", config_path(SCRIPTED_CONFIG), "++head_server.port=0"]
    with run_fleet_process(tmp_path, args, cwd=tmp_path, env=env) as running:
        row = json.loads(EXAMPLE_DATA.read_text().splitlines()[0])
        assert httpx.post(running.url(AGENT) + "/run", json=row, timeout=30).status_code == 401
        resp = httpx.post(running.url(AGENT) + "/run", json=row, headers=AUTH, timeout=30)
        assert resp.status_code == 200 and resp.json()["reward"] == 1.0
        pids = descendants(running.proc.pid)
        assert len(pids) >= 4
        for pid in pids:
            assert_clean(exposed_text(pid), f"/proc/{pid}")
