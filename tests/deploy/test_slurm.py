"""The Slurm batch script: valid bash, the right steps on the right nodes, secrets only by name."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from gymfleet.deploy import DeployError, plan_fleet, render_slurm
from tests.deploy.conftest import SECRET_VALUES


def _bash_syntax(script: str) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    done = subprocess.run([bash, "-n"], input=script, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr


def test_script_places_servers_and_collects(secret_config):
    cfg, env_yaml = secret_config
    plan = plan_fleet(
        cfg,
        {
            "nodes": 3,
            "node_of": {"policy_model": 2},
            "replicas": {"example_single_tool_call": 2},
            "ray": True,
            "partition": "cpu",
            "token_secret": "t",
            "collect": {"agent": "a", "input": "in.jsonl", "output": "out dir/o.jsonl", "num_repeats": 4},
        },
        env_yaml_values=env_yaml,
    )
    files = render_slurm(plan)
    for text in files.values():
        for value in SECRET_VALUES:
            assert value not in text
    script = files["fleet.sbatch"]
    _bash_syntax(script)
    assert "#SBATCH --nodes=3" in script and "#SBATCH --partition=cpu" in script
    assert "run --head-only" in script and "run --worker" in script and "ray start --head" in script
    assert "'out dir/o.jsonl'" in script and "--num-repeats 4" in script
    assert ': "${GYMFLEET_SECRET_POLICY_API_KEY:?' in script and ': "${GYMFLEET_TOKEN:?' in script
    placed = {
        name: [n for n in range(3) if name in yaml.safe_load(files.get(f"fleet-node{n}.yaml", "{}")) or {}]
        for name in ("example_single_tool_call", "policy_model", "judge_model")
    }
    assert placed["example_single_tool_call"] == [0, 1]  # two replicas on two nodes
    assert placed["policy_model"] == [2]
    head_config = yaml.safe_load(files["fleet.yaml"])
    assert {"example_single_tool_call", "policy_model", "judge_model"} <= set(head_config)


def test_without_collection_the_job_serves_until_its_end(secret_config):
    cfg, env_yaml = secret_config
    script = render_slurm(plan_fleet(cfg, env_yaml_values=env_yaml))["fleet.sbatch"]
    _bash_syntax(script)
    assert "serving until the job ends" in script and "ray start" in script  # only behind USE_RAY=0
    assert "USE_RAY=0" in script


def test_more_replicas_than_nodes_is_refused(secret_config):
    cfg, env_yaml = secret_config
    with pytest.raises(DeployError, match="own node"):
        render_slurm(plan_fleet(cfg, {"replicas": {"policy_model": 2}}, env_yaml_values=env_yaml))


def test_collect_needs_input_and_output(secret_config):
    cfg, env_yaml = secret_config
    with pytest.raises(DeployError, match="input and output"):
        render_slurm(plan_fleet(cfg, {"collect": {"agent": "a"}}, env_yaml_values=env_yaml))
