"""The deploy plan: secrets become env references, host/port leave the shipped config, options checked."""

from __future__ import annotations

import pytest
import yaml

from gymfleet.config import load_config
from gymfleet.deploy import DeployError, DeployOptions, plan_fleet
from gymfleet.deploy._plan import dns_label
from gymfleet.errors import NoServerInstancesError
from tests.deploy.conftest import EXAMPLE_FILES, SECRET_VALUES

JUDGE = "judge_model.responses_api_models.openai_model"
JUDGE_ENV = "JUDGE_MODEL__RESPONSES_API_MODELS__OPENAI_MODEL"


def _example(*extra: str):
    return load_config([f"+config_paths=[{','.join(EXAMPLE_FILES)}]", *extra])


def test_secrets_become_env_references_and_values_vanish(secret_config):
    cfg, env_yaml = secret_config
    plan = plan_fleet(cfg, env_yaml_values=env_yaml)
    text = plan.config_yaml()
    for value in SECRET_VALUES:
        assert value not in text
    by_path = {ref.path: ref.env for ref in plan.secrets}
    assert by_path == {
        "policy_api_key": "GYMFLEET_SECRET_POLICY_API_KEY",
        "policy_base_url": "GYMFLEET_SECRET_POLICY_BASE_URL",  # every env.yaml value is a secret
        f"{JUDGE}.openai_api_key": "GYMFLEET_SECRET_" + JUDGE_ENV + "__OPENAI_API_KEY",
        f"{JUDGE}.extra_auth.password": "GYMFLEET_SECRET_" + JUDGE_ENV + "__EXTRA_AUTH__PASSWORD",
    }
    shipped = yaml.safe_load(text)
    assert shipped["policy_api_key"] == "${oc.env:GYMFLEET_SECRET_POLICY_API_KEY}"
    # the reference stays a reference, so the server resolves it from the env at run time
    assert shipped["policy_model"]["responses_api_models"]["scripted_model"]["api_key"] == "${policy_api_key}"
    needs = {s.instance: s.secret_envs for s in plan.services}
    assert needs["policy_model"] == ("GYMFLEET_SECRET_POLICY_API_KEY",)
    assert set(needs["judge_model"]) == {
        "GYMFLEET_SECRET_POLICY_BASE_URL",
        "GYMFLEET_SECRET_JUDGE_MODEL__RESPONSES_API_MODELS__OPENAI_MODEL__OPENAI_API_KEY",
        "GYMFLEET_SECRET_JUDGE_MODEL__RESPONSES_API_MODELS__OPENAI_MODEL__EXTRA_AUTH__PASSWORD",
    }
    assert needs["example_single_tool_call"] == ()


def test_shipped_config_has_no_instance_addresses_and_names_the_head_service():
    plan = plan_fleet(
        _example(
            "++example_single_tool_call.resources_servers.example_single_tool_call.port=8123",
            "++head_server.port=11500",
        ),
        {"name": "Prod_Fleet"},
    )
    shipped = yaml.safe_load(plan.config_yaml())
    block = shipped["example_single_tool_call"]["resources_servers"]["example_single_tool_call"]
    assert "host" not in block and "port" not in block  # peers resolve through the head, not loopback
    assert shipped["head_server"] == {"host": "prod-fleet-head", "port": 11500}
    assert "config_paths" not in shipped and "deploy" not in shipped
    assert [s.dns_name for s in plan.services] == [
        "prod-fleet-example-single-tool-call",
        "prod-fleet-example-single-tool-call-simple-agent",
        "prod-fleet-policy-model",
    ]


def test_deploy_block_in_config_is_the_base_and_cli_wins():
    cfg = _example(
        "++deploy.image=registry.local/gymfleet:1", "++deploy.replicas.policy_model=3", "++deploy.nodes=2"
    )
    plan = plan_fleet(cfg, {"replicas": {"policy_model": 4}})
    assert plan.options.image == "registry.local/gymfleet:1" and plan.options.nodes == 2
    assert {s.instance: s.replicas for s in plan.services}["policy_model"] == 4
    assert [s.node for s in plan.services] == [0, 1, 0]  # round-robin over the nodes
    plan = plan_fleet(cfg, DeployOptions(image="other:2"))
    assert plan.options.image == "other:2" and plan.options.replicas == {"policy_model": 3}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"replicas": {"no_such_server": 2}}, "not a server of this config"),
        ({"replicas": {"policy_model": 0}}, "at least 1"),
        ({"nodes": 0}, "at least 1"),
        ({"node_of": {"policy_model": 3}, "nodes": 2}, "has 2 node(s)"),
        ({"server_resources": {"policy_model": {"disk": "1Gi"}}}, "unknown key"),
        ({"colour": "blue"}, "Known options"),
    ],
)
def test_bad_options_are_refused_with_the_fix(options, message):
    with pytest.raises(DeployError, match=None) as info:
        plan_fleet(_example(), options)
    assert message in str(info.value)


def test_a_config_without_servers_has_nothing_to_deploy():
    with pytest.raises(NoServerInstancesError, match="nothing to deploy"):
        plan_fleet(load_config([]))


def test_a_secret_inside_another_value_is_refused(tmp_path):
    path = tmp_path / "leak.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "api_key": "sk-leaky-value-789",
                "m": {
                    "responses_api_models": {
                        "openai_model": {
                            "entrypoint": "app.py",
                            "openai_base_url": "http://127.0.0.1:9/v1?key=sk-leaky-value-789",
                        }
                    }
                },
            }
        )
    )
    from gymfleet.deploy import render_compose

    plan = plan_fleet(load_config([f"+config_paths=[{path}]"]))
    with pytest.raises(DeployError, match="value of a secret"):
        render_compose(plan)


def test_dns_labels():
    assert dns_label("My_Server.v2") == "my-server-v2"
    assert dns_label("9lives") == "s-9lives"
    long = dns_label("x" * 100)
    assert len(long) <= 63 and long != dns_label("x" * 99)
