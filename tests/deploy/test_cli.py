"""``gymfleet deploy ...`` through the real CLI parser."""

from __future__ import annotations

import yaml

from gymfleet.cli.main import main
from tests.deploy.conftest import EXAMPLE_FILES


def test_deploy_k8s_writes_manifests(tmp_path, capsys):
    out = tmp_path / "k8s"
    rc = main(
        [
            "deploy",
            "k8s",
            "-c",
            EXAMPLE_FILES[0],
            "-c",
            EXAMPLE_FILES[1],
            "-o",
            str(out),
            "--name",
            "rl",
            "--replicas",
            "policy_model=2",
            "--image",
            "reg/gf:1",
            "++head_server.port=11999",
        ]
    )
    assert rc == 0
    written = capsys.readouterr().out.split()
    assert str(out / "kustomization.yaml") in written
    model = yaml.safe_load((out / "server-rl-policy-model.yaml").read_text())
    assert model["spec"]["replicas"] == 2
    assert model["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/gf:1"
    shipped = yaml.safe_load(yaml.safe_load((out / "configmap.yaml").read_text())["data"]["fleet.yaml"])
    assert shipped["head_server"] == {"host": "rl-head", "port": 11999}


def test_deploy_slurm_and_compose(tmp_path):
    assert (
        main(
            [
                "deploy",
                "slurm",
                "-c",
                EXAMPLE_FILES[0],
                "-c",
                EXAMPLE_FILES[1],
                "-o",
                str(tmp_path / "s"),
                "--nodes",
                "2",
                "--collect-input",
                "in.jsonl",
                "--collect-output",
                "out.jsonl",
            ]
        )
        == 0
    )
    assert (tmp_path / "s" / "fleet.sbatch").stat().st_mode & 0o111
    assert (
        main(["deploy", "compose", "-c", EXAMPLE_FILES[0], "-c", EXAMPLE_FILES[1], "-o", str(tmp_path / "c")])
        == 0
    )
    assert (tmp_path / "c" / "docker-compose.yaml").exists()


def test_bad_flag_value_is_a_usage_error(tmp_path, capsys):
    rc = main(["deploy", "k8s", "-c", EXAMPLE_FILES[0], "-o", str(tmp_path), "--replicas", "policy_model"])
    assert rc == 2
    assert "NAME=NUMBER" in capsys.readouterr().err
