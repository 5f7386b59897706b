"""Kubernetes manifests: validated against the Kubernetes schemas (kubernetes-validate bundles them; no
cluster is available here) and checked for what the deployment relies on."""

from __future__ import annotations

import pytest
import yaml

from gymfleet.deploy import plan_fleet, render_k8s
from tests.deploy.conftest import SECRET_VALUES


def _validate(files: dict[str, str]) -> None:
    kv = pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate (scripts/e2e does)"
    )
    for name, text in files.items():
        if not name.endswith(".yaml") or name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(text):
            kv.validate(doc, "1.30.0", strict=True)  # raises ValidationError with the path of the problem


def _docs(files: dict[str, str]) -> dict[tuple[str, str], dict]:
    out = {}
    for name, text in files.items():
        if name.endswith(".yaml") and name != "kustomization.yaml":
            for doc in yaml.safe_load_all(text):
                out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def test_manifests_validate_and_wire_the_fleet(secret_config):
    cfg, env_yaml = secret_config
    plan = plan_fleet(
        cfg,
        {
            "namespace": "rl",
            "token_secret": "fleet-token",
            "replicas": {"policy_model": 3},
            "tls": {"secret": "fleet-tls"},
            "server_resources": {"judge_model": {"gpus": 1}},
        },
        env_yaml_values=env_yaml,
    )
    files = render_k8s(plan)
    for text in files.values():
        for value in SECRET_VALUES:
            assert value not in text
    _validate(files)
    docs = _docs(files)
    assert not any(
        kind == "Secret" for kind, _ in docs
    )  # secrets are created by the operator, never generated
    shipped = yaml.safe_load(docs[("ConfigMap", "gymfleet-config")]["data"]["fleet.yaml"])
    service = docs[("Service", "gymfleet-head")]
    assert shipped["head_server"] == {
        "host": "gymfleet-head.rl.svc",
        "port": service["spec"]["ports"][0]["port"],
    }
    assert shipped["tls"]["cert_file"] == "/etc/gymfleet/tls/tls.crt"
    head = docs[("Deployment", "gymfleet-head")]
    assert head["spec"]["replicas"] == 1 and head["spec"]["strategy"]["type"] == "Recreate"
    model = docs[("Deployment", "gymfleet-policy-model")]
    assert model["spec"]["replicas"] == 3 and model["metadata"]["namespace"] == "rl"
    pod = model["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["serve"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/", "port": "http", "scheme": "HTTPS"}
    env = {e["name"]: e for e in container["env"]}
    assert env["NEMO_GYM_CONFIG_PATH"]["value"] == "policy_model"
    assert env["GYMFLEET_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "fleet-token", "key": "token"}
    assert env["GYMFLEET_SECRET_POLICY_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "gymfleet-secrets"
    assert "GYMFLEET_SECRET_POLICY_BASE_URL" not in env  # only the secrets this server refers to
    assert container["resources"]["requests"] == {"cpu": "250m", "memory": "512Mi"}
    assert (
        pod["securityContext"]["runAsNonRoot"] is True
        and container["securityContext"]["readOnlyRootFilesystem"]
    )
    assert {v["name"] for v in pod["volumes"]} == {"config", "tmp", "tls"}
    judge = docs[("Deployment", "gymfleet-judge-model")]["spec"]["template"]["spec"]["containers"][0]
    assert judge["resources"]["limits"]["nvidia.com/gpu"] == 1
    kustomization = yaml.safe_load(files["kustomization.yaml"])
    assert set(kustomization["resources"]) == {
        n for n in files if n.endswith(".yaml") and n != "kustomization.yaml"
    }
    assert (
        "kubectl -n rl create secret generic gymfleet-secrets --from-env-file=secrets.env"
        in files["README.md"]
    )


def test_config_change_rolls_the_pods(secret_config):
    cfg, env_yaml = secret_config
    a = _docs(render_k8s(plan_fleet(cfg, env_yaml_values=env_yaml)))
    b = _docs(render_k8s(plan_fleet(cfg, {"head_port": 11001}, env_yaml_values=env_yaml)))
    key = ("Deployment", "gymfleet-policy-model")

    def digest(docs):
        return docs[key]["spec"]["template"]["metadata"]["annotations"]["gymfleet/config-sha256"]

    assert digest(a) != digest(b)
    _validate(render_k8s(plan_fleet(cfg, env_yaml_values=env_yaml)))  # plain HTTP, no token: valid too
