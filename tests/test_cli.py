"""CLI faces: config dump hides secrets, big configs reach servers, startup deadline, log files, legacy help."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from tests.fleet_helpers import EXAMPLE_CONFIG, REPO, SCRIPTED_CONFIG, TEST_SERVERS_ROOT, run_fleet_process


def run_cli(*args: str, cwd=REPO, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gymfleet.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_config_dump_resolves_and_hides_secrets(tmp_path):
    (tmp_path / "env.yaml").write_text("policy_base_url: http://127.0.0.1:9/v1\npolicy_api_key: sk-do-not-print\n"
                                       "policy_model_name: m\n")
    proc = run_cli("config", "-c", EXAMPLE_CONFIG, "-c", "responses_api_models/openai_model/configs/openai_model.yaml",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "sk-do-not-print" not in proc.stdout + proc.stderr
    assert "openai_base_url: http://127.0.0.1:9/v1" in proc.stdout
    legacy = subprocess.run(
        [sys.executable, "-c", "import sys; from gymfleet.cli.legacy import ng_dump_config; sys.exit(ng_dump_config())",
         f"+config_paths=[{EXAMPLE_CONFIG},responses_api_models/openai_model/configs/openai_model.yaml]"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert legacy.returncode == 0 and "sk-do-not-print" not in legacy.stdout


def test_config_errors_exit_2_with_the_fix():
    proc = run_cli("config", "-c", "does/not/exist.yaml")
    assert proc.returncode == 2
    assert "does/not/exist.yaml" in proc.stderr and "Searched" in proc.stderr
    strict = run_cli("config", "--strict", "-c", EXAMPLE_CONFIG)  # policy_model is defined nowhere
    assert strict.returncode == 2 and "policy_model" in strict.stderr


def test_large_config_reaches_servers_without_argv_limits(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("big_blob: " + json.dumps("x" * 400_000) + "\n")  # > MAX_ARG_STRLEN (128 KiB)
    with run_fleet_process(tmp_path, ["-c", EXAMPLE_CONFIG, "-c", SCRIPTED_CONFIG, "-c", str(big),
                                      "++head_server.port=0"]) as fleet:
        row = {"responses_create_params": {"input": "weather in Oslo?", "tools": [
            {"type": "function", "name": "get_weather", "parameters": {
                "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}}
        resp = httpx.post(fleet.url("example_single_tool_call_simple_agent") + "/run", json=row, timeout=30)
        assert resp.json()["reward"] == 1.0
        logs = sorted(p.name for p in (tmp_path / "logs").iterdir())
        assert logs == ["example_single_tool_call.log", "example_single_tool_call_simple_agent.log",
                        "policy_model.log"]
        assert "(policy_model)" in fleet.log()  # server lines are echoed with their name


def test_startup_deadline_names_the_stuck_server(tmp_path):
    env = {"GYMFLEET_EXTRA_ROOTS": str(TEST_SERVERS_ROOT)}
    args = ["-c", "tests/servers/configs/hang_on_start.yaml", "++head_server.port=0", "--startup-timeout", "3"]
    with run_fleet_process(tmp_path, args, env=env, wait_ready=False) as running:
        assert running.proc.wait(60) == 1
        log = running.log()
        assert "hang_on_start" in log and "did not become ready within 3s" in log
        assert "waiting for a resource that never arrives" in log


def test_legacy_help_and_no_servers_message(tmp_path):
    out = subprocess.run([sys.executable, "-c",
                          "import sys; from gymfleet.cli.legacy import ng_run; sys.exit(ng_run())",
                          "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "+config_paths" in out.stdout
    empty = run_cli("run", "++head_server.port=0", cwd=tmp_path)
    assert empty.returncode == 2 and "no server instances" in empty.stderr.lower()


def test_quickstart_scripted_runs_the_main_job(tmp_path):
    """The README's main job, with the scripted stand-in (the local-model variant runs in tests of local_model)."""
    out = tmp_path / "qs" / "rollouts.jsonl"
    proc = run_cli("quickstart", "--model", "scripted", "--repeats", "1", "--output", str(out), timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "mean/reward" in proc.stdout and "The fleet has stopped." in proc.stdout
    assert (out.parent / "rollouts_example_single_tool_call_simple_agent.jsonl").exists()
    rows = (out.parent / "rollouts_arithmetic_simple_agent.jsonl").read_text().splitlines()
    assert len(rows) == 8  # 8 example rows x 1 repeat
