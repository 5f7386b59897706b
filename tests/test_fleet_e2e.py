"""Real fleets as subprocesses: rollouts, head endpoints, sessions, crash-restart, shutdown, bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from tests.fleet_helpers import (
    AGENT,
    EXAMPLE_CONFIG,
    EXAMPLE_DATA,
    REPO,
    SCRIPTED_CONFIG,
    TEST_SERVERS_ROOT,
    pid_alive,
    run_fleet_process,
    wait_until,
)

BASE_ARGS = ["-c", EXAMPLE_CONFIG, "-c", SCRIPTED_CONFIG, "++head_server.port=0"]
DISPLAY_FIELDS = {
    "process_name", "server_type", "name", "host", "port", "url", "pid", "entrypoint", "config_path",
    "start_time", "dir_path", "status", "uptime_seconds",
}


def first_row() -> dict:
    return json.loads(EXAMPLE_DATA.read_text().splitlines()[0])


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    with run_fleet_process(tmp, BASE_ARGS) as running:
        yield running


def test_rollout_through_agent_model_tool_verify(fleet):
    resp = httpx.post(fleet.url(AGENT) + "/run", json=first_row(), timeout=30)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["reward"] == 1.0
    kinds = [item["type"] for item in body["response"]["output"]]
    assert kinds == ["function_call", "function_call_output", "message"]
    tool_output = json.loads(body["response"]["output"][1]["output"])
    assert tool_output == {"city": "sf", "weather_description": "The weather in sf is cold."}
    assert body["responses_create_params"]["input"][1]["content"] == "what's it like in sf?"


def test_head_root_and_server_instances_shape(fleet):
    assert httpx.get(fleet.head_url + "/", timeout=5).json() == {"status": "ok"}
    instances = fleet.instances()
    assert {i["process_name"] for i in instances} == {"example_single_tool_call", AGENT, "policy_model"}
    for item in instances:
        assert DISPLAY_FIELDS <= set(item), item
        assert item["config_path"] == item["process_name"]
        assert item["url"] == f"http://{item['host']}:{item['port']}"
        assert item["status"] == "healthy" and item["uptime_seconds"] >= 0
        assert pid_alive(item["pid"])
    agent = next(i for i in instances if i["process_name"] == AGENT)
    assert (agent["server_type"], agent["name"], agent["entrypoint"]) == (
        "responses_api_agents", "simple_agent", "app.py"
    )
    assert agent["dir_path"].endswith("responses_api_agents/simple_agent")


def test_global_config_dict_yaml_is_a_json_string_of_yaml(fleet):
    resp = httpx.get(fleet.head_url + "/global_config_dict_yaml", timeout=5)
    assert resp.headers["content-type"].startswith("application/json")
    text = json.loads(resp.content)  # NeMo Gym clients json.loads the body, then parse YAML
    assert isinstance(text, str)
    config = yaml.safe_load(text)
    head_port = int(fleet.head_url.rsplit(":", 1)[1])
    assert config["head_server"] == {"host": "127.0.0.1", "port": head_port}
    block = config["example_single_tool_call"]["resources_servers"]["example_single_tool_call"]
    assert block["entrypoint"] == "app.py" and block["domain"] == "agent"
    assert block["port"] == int(fleet.url("example_single_tool_call").rsplit(":", 1)[1])
    assert config["session_secret"] == "****"  # secrets never leave the head


def test_server_client_from_global_config_routes_by_name(fleet):
    code = f"""
import asyncio, json
from gymfleet import ServerClient
client = ServerClient.load_from_global_config({{"host": "127.0.0.1", "port": {fleet.head_url.rsplit(':', 1)[1]}}})
async def main():
    resp = await client.post(server_name="example_single_tool_call", url_path="/get_weather", json={{"city": "Oslo"}})
    print(json.dumps(await resp.json()))
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["weather_description"] == "The weather in Oslo is cold."


def test_collect_cli_writes_stamped_rows_and_metrics(fleet, tmp_path):
    out = tmp_path / "rollouts.jsonl"
    head = fleet.head_url.removeprefix("http://")
    proc = subprocess.run(
        [sys.executable, "-m", "gymfleet.cli.main", "collect", "--head", head, "-a", AGENT, "-i", str(EXAMPLE_DATA),
         "-o", str(out), "--num-repeats", "2", "--quiet", "--summary-json", str(tmp_path / "summary.json")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 10
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["expected"], summary["succeeded"], summary["missing"], summary["ok"]) == (10, 10, 0, True)
    assert summary["failed_by_class"] == {} and summary["output_jsonl_fpath"] == str(out)
    assert 0 < summary["first_dispatch_at"] <= summary["last_outcome_at"]
    assert sorted((r["_ng_task_index"], r["_ng_rollout_index"]) for r in rows) == [
        (t, k) for t in range(5) for k in range(2)
    ]
    assert all(r["agent_ref"] == {"name": AGENT} and r["reward"] == 1.0 for r in rows)
    assert (tmp_path / "rollouts_materialized_inputs.jsonl").exists()
    metrics = json.loads((tmp_path / "rollouts_aggregate_metrics.json").read_text())
    assert metrics[0]["agent_ref"] == {"name": AGENT}
    assert metrics[0]["key_metrics"]["mean/reward"] == 1.0


def test_ng_collect_rollouts_legacy_keys(fleet, tmp_path):
    out = tmp_path / "legacy.jsonl"
    port = fleet.head_url.rsplit(":", 1)[1]
    code = "import sys; from gymfleet.cli.legacy import ng_collect_rollouts; sys.exit(ng_collect_rollouts())"
    proc = subprocess.run(
        [sys.executable, "-c", code, f"+agent_name={AGENT}", f"+input_jsonl_fpath={EXAMPLE_DATA}",
         f"+output_jsonl_fpath={out}", "+limit=2", "+num_samples_in_parallel=2", f"++head_server.port={port}",
         "+quiet=true"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(out.read_text().splitlines()) == 2


def test_status_json(fleet):
    proc = subprocess.run(
        [sys.executable, "-m", "gymfleet.cli.main", "status", "--json", "--head", fleet.head_url.removeprefix("http://")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 3 and all(r["healthy"] for r in rows)
    assert all(isinstance(r["latency_ms"], float) for r in rows)


def test_bad_requests_get_4xx_not_500(fleet):
    agent = fleet.url(AGENT)
    bad_json = httpx.post(
        agent + "/run", content=b"{not json", headers={"content-type": "application/json"}, timeout=10
    )
    assert bad_json.status_code == 422
    wrong_type = httpx.post(agent + "/run", json={"responses_create_params": {"input": 42}}, timeout=10)
    assert wrong_type.status_code == 422
    assert any("input" in map(str, err["loc"]) for err in wrong_type.json()["detail"])
    unknown_field = httpx.post(agent + "/run", json={"responses_create_params": {"input": "hi", "temprature": 1}},
                               timeout=10)
    assert unknown_field.status_code == 422  # typo in a create param is caught, with its path
    assert any("temprature" in map(str, err["loc"]) for err in unknown_field.json()["detail"])
    tool = httpx.post(fleet.url("example_single_tool_call") + "/get_weather", json={"town": "x"}, timeout=10)
    assert tool.status_code == 422


def test_session_cookie_is_signed_and_forgeries_are_replaced(fleet):
    url = fleet.url("example_single_tool_call")
    first = httpx.post(url + "/seed_session", json={}, timeout=10)
    name = "ExampleSingleToolCallServer___example_single_tool_call"
    cookie = first.cookies[name]
    again = httpx.post(url + "/seed_session", json={}, cookies={name: cookie}, timeout=10)
    assert name not in again.cookies  # a valid session is kept as is
    forged = cookie.rsplit(".", 1)[0] + ".AAAAAAAAAAAAAAAAAAAAAAAA"
    replaced = httpx.post(url + "/seed_session", json={}, cookies={name: forged}, timeout=10)
    assert replaced.cookies[name] != forged


def test_session_affinity_across_a_rollout(tmp_path):
    env = {"GYMFLEET_EXTRA_ROOTS": str(TEST_SERVERS_ROOT)}
    args = ["-c", "tests/servers/configs/session_counter.yaml", "-c", SCRIPTED_CONFIG, "++head_server.port=0"]
    with run_fleet_process(tmp_path, args, env=env) as running:
        rows = [
            httpx.post(running.url("session_agent") + "/run", json={"responses_create_params": {
                "input": "bump it", "tools": [{"type": "function", "name": "bump", "parameters": {
                    "type": "object", "properties": {}}}]}}, timeout=30).json()
            for _ in range(3)
        ]
        # seed_session -> bump (tool call) -> verify all saw one session: the count is 1 in each rollout
        assert [r["reward"] for r in rows] == [1.0, 1.0, 1.0]
        assert len({r["session_id"] for r in rows}) == 3  # a new session per rollout
        # direct: three bumps with the cookie of one seed_session
        url = running.url("session_counter")
        with httpx.Client(base_url=url, timeout=10) as client:
            client.post("/seed_session", json={})
            counts = [client.post("/bump", json={}).json()["count"] for _ in range(3)]
        assert counts == [1, 2, 3]


def test_inner_failure_is_typed_502_naming_the_model(tmp_path):
    args = [*BASE_ARGS, "++policy_model.responses_api_models.scripted_model.fail_every_n=1"]
    with run_fleet_process(tmp_path, args) as running:
        resp = httpx.post(running.url(AGENT) + "/run", json=first_row(), timeout=30)
        assert resp.status_code == 502
        error = resp.json()["error"]
        assert error["type"] == "upstream_status"
        assert error["upstream_server"] == "policy_model"
        assert error["upstream_server_type"] == "responses_api_models"
        assert error["server"] == AGENT


def test_crashed_server_is_restarted_and_reregistered(tmp_path):
    with run_fleet_process(tmp_path, BASE_ARGS) as running:
        old = next(i for i in running.instances() if i["process_name"] == "example_single_tool_call")
        os.kill(old["pid"], signal.SIGKILL)

        def replaced() -> bool:
            now = [i for i in running.instances() if i["process_name"] == "example_single_tool_call"]
            return len(now) == 1 and now[0]["pid"] != old["pid"] and now[0]["status"] == "healthy"

        assert wait_until(replaced, 20), running.log()[-3000:]
        new = next(i for i in running.instances() if i["process_name"] == "example_single_tool_call")
        assert new["port"] == old["port"]  # the launcher holds the socket: same address after restart
        resp = httpx.post(running.url(AGENT) + "/run", json=first_row(), timeout=30)
        assert resp.status_code == 200 and resp.json()["reward"] == 1.0
        assert "restart" in running.log().lower()


def test_sigkill_of_launcher_leaves_no_process_behind(tmp_path):
    with run_fleet_process(tmp_path, BASE_ARGS) as running:
        pids = running.server_pids()
        ports = [int(running.url(n).rsplit(":", 1)[1]) for n in running.ready["servers"]]
        assert all(pid_alive(p) for p in pids)
        running.proc.send_signal(signal.SIGKILL)
        running.proc.wait(5)
        assert wait_until(lambda: not any(pid_alive(p) for p in pids), 10), [p for p in pids if pid_alive(p)]
        for port in ports:  # the ports are free for an immediate restart
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))


def test_sigint_stops_everything_cleanly(tmp_path):
    with run_fleet_process(tmp_path, BASE_ARGS) as running:
        pids = running.server_pids()
        start = time.monotonic()
        running.proc.send_signal(signal.SIGINT)
        assert running.proc.wait(15) == 0
        assert time.monotonic() - start < 10
        assert not any(pid_alive(p) for p in pids)
        assert "fleet stopped" in running.log()


def test_startup_failure_names_the_server_and_shows_its_last_lines(tmp_path):
    env = {"GYMFLEET_EXTRA_ROOTS": str(TEST_SERVERS_ROOT)}
    args = ["-c", "tests/servers/configs/crash_on_start.yaml", "++head_server.port=0"]
    with run_fleet_process(tmp_path, args, env=env, wait_ready=False) as running:
        assert running.proc.wait(60) == 1
        log = running.log()
        assert "crash_on_start" in log and "missing file data/answers.jsonl" in log
        assert "exited during startup" in log


def test_explicit_port_in_use_names_the_holder(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        args = [*BASE_ARGS, f"++example_single_tool_call.resources_servers.example_single_tool_call.port={port}"]
        with run_fleet_process(tmp_path, args, wait_ready=False) as running:
            assert running.proc.wait(60) == 1
            log = running.log()
            assert str(port) in log and str(os.getpid()) in log
    finally:
        holder.close()


def test_exec_spawn_method_serves_and_leaves_nothing_behind(tmp_path):
    """The fallback without the zygote (fresh `python app.py` per server) behaves the same."""
    with run_fleet_process(tmp_path, BASE_ARGS, env={"GYMFLEET_SPAWN_METHOD": "exec"}) as running:
        resp = httpx.post(running.url(AGENT) + "/run", json=first_row(), timeout=30)
        assert resp.status_code == 200 and resp.json()["reward"] == 1.0
        pids = running.server_pids()
        running.proc.send_signal(signal.SIGKILL)
        running.proc.wait(5)
        assert wait_until(lambda: not any(pid_alive(p) for p in pids), 10)
