"""The image's entrypoint, run on the host: serve from NEMO_GYM_CONFIG_DICT alone, register, health-check,
stop cleanly (also as PID 1 of a fresh PID namespace, as in a container), and refuse a missing secret with
the fix."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from gymfleet.deploy.container import load_secret_files
from tests.fleet_helpers import REPO, run_fleet_process, stop_process_group, wait_until

NAME = "example_single_tool_call"


def _instances(head_url: str) -> list[dict]:
    return [
        i for i in httpx.get(head_url + "/server_instances", timeout=5).json() if i["process_name"] == NAME
    ]


def _config_dict(head_port: int) -> str:
    return yaml.safe_dump(
        {
            "head_server": {"host": "127.0.0.1", "port": head_port},
            NAME: {
                "resources_servers": {
                    NAME: {
                        "entrypoint": "app.py",
                        "domain": "agent",
                        "host": "127.0.0.1",
                        "port": 0,
                        "api_key": "${oc.env:GYMFLEET_SECRET_OWN_KEY}",
                    }
                }
            },
            # Another server's secret: this container does not get it, and must still load the config.
            "other": {"policy_api_key": "${oc.env:GYMFLEET_SECRET_SOMEONE_ELSES}"},
        }
    )


def _entrypoint_env(tmp_path: Path, head_port: int) -> dict[str, str]:
    secret = tmp_path / "own_key"
    secret.write_text("s3cr3t-own-key\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GYMFLEET_", "NEMO_GYM_"))}
    env.update(
        {
            "NEMO_GYM_CONFIG_DICT": _config_dict(head_port),
            "GYMFLEET_SECRET_OWN_KEY_FILE": str(secret),
            "GYMFLEET_REQUIRED_SECRETS": "GYMFLEET_SECRET_OWN_KEY",
            "GYMFLEET_STATE_DIR": str(tmp_path / "state"),
            "PYTHONPATH": str(REPO),
        }
    )
    return env


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("head")
    with run_fleet_process(
        tmp, ["--head-only", "++head_server.host=127.0.0.1", "++head_server.port=0"]
    ) as running:
        yield running


def _serve_and_stop(head, tmp_path: Path, prefix: list[str]) -> None:
    port = int(head.head_url.rsplit(":", 1)[1])
    env = _entrypoint_env(tmp_path, port)
    log = tmp_path / "entrypoint.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "gymfleet.deploy.container"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert wait_until(lambda: bool(_instances(head.head_url)) or proc.poll() is not None, 30.0, 0.1), (
            "never registered"
        )
        assert proc.poll() is None, log.read_text()
        health = subprocess.run(
            [sys.executable, "-m", "gymfleet.deploy.container", "healthcheck"], env=env, timeout=15
        )
        assert health.returncode == 0
        target = proc.pid
        if prefix:  # unshare --fork: signal the namespace's PID 1 (our entrypoint), as `docker stop` does
            target = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
        os.kill(target, signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()
        assert wait_until(lambda: not _instances(head.head_url), 10.0, 0.1), "did not deregister"
    finally:
        stop_process_group(proc)  # type: ignore[arg-type]


def test_serves_from_config_dict_alone_and_stops_cleanly(head, tmp_path):
    _serve_and_stop(head, tmp_path, [])


def test_as_pid_one_it_forwards_signals_and_exits_zero(head, tmp_path):
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and unshare(1) for a PID namespace")
    _serve_and_stop(head, tmp_path, [unshare, "--pid", "--fork", "--kill-child"])


def test_missing_required_secret_is_refused_with_the_fix(tmp_path):
    env = _entrypoint_env(tmp_path, 9)
    env.pop("GYMFLEET_SECRET_OWN_KEY_FILE")
    done = subprocess.run(
        [sys.executable, "-m", "gymfleet.deploy.container", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "GYMFLEET_SECRET_OWN_KEY" in done.stderr and "_FILE" in done.stderr


def test_healthcheck_fails_when_nothing_listens(tmp_path):
    env = {**os.environ, "GYMFLEET_STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "gymfleet.deploy.container", "healthcheck"], env=env, timeout=15
    )
    assert done.returncode == 1


def test_secret_files_are_read_into_their_variables(tmp_path):
    (tmp_path / "t").write_text("tok\n")
    environ = {
        "GYMFLEET_TOKEN_FILE": str(tmp_path / "t"),
        "GYMFLEET_CONFIG_FILE": "/not/a/secret",
        "GYMFLEET_SECRET_A_FILE": str(tmp_path / "missing"),
    }
    environ["GYMFLEET_SECRET_A"] = "already set wins"
    assert load_secret_files(environ) == ["GYMFLEET_TOKEN"]
    assert environ["GYMFLEET_TOKEN"] == "tok" and "GYMFLEET_CONFIG" not in environ
