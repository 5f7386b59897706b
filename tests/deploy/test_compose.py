"""Docker Compose output: checked by Debian's docker-compose (a real parser) and for what it must contain."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from gymfleet.deploy import plan_fleet, render_compose, write_bundle
from tests.deploy.conftest import SECRET_VALUES


def _compose_config(outdir) -> str:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose; scripts/e2e does)")
    done = subprocess.run([tool, "config"], cwd=outdir, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_compose_file_is_valid_and_complete(secret_config, tmp_path):
    cfg, env_yaml = secret_config
    plan = plan_fleet(
        cfg,
        {
            "token_secret": "fleet-token",
            "replicas": {"example_single_tool_call": 3},
            "tls": {"host_dir": "/srv/tls"},
            "gpus": 0,
            "server_resources": {"judge_model": {"gpus": 1, "memory": "2Gi"}},
        },
        env_yaml_values=env_yaml,
    )
    files = render_compose(plan)
    for text in files.values():
        for value in SECRET_VALUES:
            assert value not in text
    write_bundle(files, tmp_path)
    resolved = yaml.safe_load(_compose_config(tmp_path))
    services = resolved["services"]
    head = services["gymfleet-head"]
    port = head["ports"][0]
    assert head["command"] == ["head"]
    assert (
        str(port).startswith("127.0.0.1:11000:11000")
        if isinstance(port, str)
        else port["host_ip"] == "127.0.0.1"
    )
    resources = services["gymfleet-example-single-tool-call"]
    assert resources["deploy"]["replicas"] == 3
    assert resources["depends_on"]["gymfleet-head"]["condition"] == "service_healthy"
    assert resources["healthcheck"]["test"][-1] == "healthcheck" and resources["restart"] == "unless-stopped"
    assert resources["environment"]["NEMO_GYM_CONFIG_PATH"] == "example_single_tool_call"
    assert resources["environment"]["GYMFLEET_TOKEN_FILE"] == "/run/secrets/gymfleet_token"
    assert "/srv/tls:/etc/gymfleet/tls:ro" in resources["volumes"]
    assert resources["read_only"] is True and resources["cap_drop"] == ["ALL"]
    judge = services["gymfleet-judge-model"]
    key_env = "GYMFLEET_SECRET_JUDGE_MODEL__RESPONSES_API_MODELS__OPENAI_MODEL__OPENAI_API_KEY"
    assert judge["environment"][f"{key_env}_FILE"] == f"/run/secrets/{key_env.lower()}"
    assert judge["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 1
    assert judge["deploy"]["resources"]["reservations"]["memory"] in ("2g", 2 * 1024**3, 2 * 1000**3)
    assert "secrets" not in resources or all(s["source"] == "gymfleet_token" for s in resources["secrets"])
    assert set(resolved["secrets"]) >= {"gymfleet_token", key_env.lower()}
    shipped = yaml.safe_load((tmp_path / "fleet.yaml").read_text())
    assert shipped["head_server"] == {"host": "gymfleet-head", "port": 11000}
    assert shipped["tls"] == {
        "cert_file": "/etc/gymfleet/tls/tls.crt",
        "key_file": "/etc/gymfleet/tls/tls.key",
        "ca_file": "/etc/gymfleet/tls/ca.crt",
    }
    assert "chmod 600 secrets/*" in files["README.md"]


def test_dollar_signs_are_escaped_for_compose(tmp_path):
    from gymfleet.config import load_config
    from tests.deploy.conftest import EXAMPLE_FILES

    plan = plan_fleet(load_config([f"+config_paths=[{','.join(EXAMPLE_FILES)}]"]), {"image": "reg/gf:$TAG"})
    write_bundle(render_compose(plan), tmp_path)
    resolved = yaml.safe_load(_compose_config(tmp_path))
    # not interpolated away (compose re-emits the escaped form, which is itself valid compose)
    assert resolved["services"]["gymfleet-head"]["image"] in ("reg/gf:$TAG", "reg/gf:$$TAG")
