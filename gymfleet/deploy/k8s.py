"""Kubernetes manifests: head Deployment + Service, a Deployment per server, the config as a ConfigMap.

Servers register with the head through its Service DNS name and advertise their pod IP; peers find each
other through the head's registry (several replicas of a name are balanced, sessions stay on their pod).
Secret values come from Secrets by reference (``secretKeyRef``); the manifests hold none. Apply with
``kubectl apply -k DIR``."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from gymfleet.deploy._common import CONFIG_MOUNT, Bundle, container_env, head_env
from gymfleet.deploy._plan import TLS_MOUNT_DIR, TOKEN_ENV, FleetPlan, ServiceSpec

__all__ = ["render_k8s"]

RUN_AS = 10001  # the image's non-root user (docker/Dockerfile)


def _labels(plan: FleetPlan, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "gymfleet",
        "app.kubernetes.io/instance": plan.name,
        "app.kubernetes.io/component": component,
    }


def _meta(plan: FleetPlan, name: str, component: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": _labels(plan, component)}
    if plan.options.namespace:
        meta["namespace"] = plan.options.namespace
    return meta


def secrets_name(plan: FleetPlan) -> str:
    return f"{plan.name}-secrets"


def _env(plan: FleetPlan, plain: dict[str, str], secret_envs: tuple[str, ...]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plain.items()]
    if plan.options.token_secret:
        env.append(
            {
                "name": TOKEN_ENV,
                "valueFrom": {"secretKeyRef": {"name": plan.options.token_secret, "key": "token"}},
            }
        )
    for name in secret_envs:
        env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secrets_name(plan), "key": name}}})
    return env


def _probe(port: str, scheme: str, *, period: int, failures: int, delay: int = 0) -> dict[str, Any]:
    probe: dict[str, Any] = {
        "httpGet": {"path": "/", "port": port, "scheme": scheme},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }
    if delay:
        probe["initialDelaySeconds"] = delay
    return probe


def _pod(plan: FleetPlan, component: str, container: dict[str, Any], config_hash: str) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": f"{plan.name}-config"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    mounts = [
        {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    tls = plan.options.tls
    if tls is not None:
        volumes.append({"name": "tls", "secret": {"secretName": tls.secret or f"{plan.name}-tls"}})
        mounts.append({"name": "tls", "mountPath": TLS_MOUNT_DIR, "readOnly": True})
    container["volumeMounts"] = mounts
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    return {
        "metadata": {
            "labels": _labels(plan, component),
            "annotations": {"gymfleet/config-sha256": config_hash},
        },
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS,
                "runAsGroup": RUN_AS,
                "fsGroup": RUN_AS,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": volumes,
        },
    }


def _deployment(
    plan: FleetPlan, name: str, component: str, replicas: int, pod: dict[str, Any], *, recreate: bool = False
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {
            "matchLabels": {"app.kubernetes.io/instance": plan.name, "app.kubernetes.io/component": component}
        },
        "template": pod,
    }
    if recreate:
        spec["strategy"] = {"type": "Recreate"}  # one registry: never two heads at once
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(plan, name, component),
        "spec": spec,
    }


def _head(plan: FleetPlan, config_hash: str) -> list[dict[str, Any]]:
    scheme = "HTTPS" if plan.options.tls else "HTTP"
    container = {
        "name": "head",
        "image": plan.options.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["head"],
        "env": _env(plan, head_env(plan), ()),
        "ports": [{"name": "http", "containerPort": plan.head_port, "protocol": "TCP"}],
        "readinessProbe": _probe("http", scheme, period=5, failures=3),
        "livenessProbe": _probe("http", scheme, period=20, failures=3, delay=10),
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    }
    pod = _pod(plan, "head", container, config_hash)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(plan, plan.head_dns_name, "head"),
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/instance": plan.name, "app.kubernetes.io/component": "head"},
            "ports": [{"name": "http", "port": plan.head_port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return [_deployment(plan, plan.head_dns_name, "head", 1, pod, recreate=True), service]


def _server(plan: FleetPlan, svc: ServiceSpec, config_hash: str) -> dict[str, Any]:
    scheme = "HTTPS" if plan.options.tls else "HTTP"
    resources: dict[str, Any] = {
        "requests": {"cpu": svc.cpu, "memory": svc.memory},
        "limits": {"memory": svc.memory},
    }
    if svc.gpus:
        resources["limits"]["nvidia.com/gpu"] = svc.gpus
    container = {
        "name": "server",
        "image": plan.options.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["serve"],
        "env": _env(plan, container_env(plan, svc), svc.secret_envs),
        "ports": [{"name": "http", "containerPort": plan.options.server_port, "protocol": "TCP"}],
        "startupProbe": _probe("http", scheme, period=2, failures=60),
        "readinessProbe": _probe("http", scheme, period=5, failures=3),
        "livenessProbe": _probe("http", scheme, period=20, failures=3),
        "resources": resources,
    }
    return _deployment(
        plan, svc.dns_name, svc.dns_name, svc.replicas, _pod(plan, svc.dns_name, container, config_hash)
    )


def _dump(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)


def render_k8s(plan: FleetPlan) -> Bundle:
    """Manifests (one file per object group), ``kustomization.yaml`` and a README of the Secrets to create."""
    head_host = plan.head_dns_name
    if plan.options.namespace:
        head_host = f"{plan.head_dns_name}.{plan.options.namespace}.svc"
    config_text = plan.config_yaml(tls=plan.tls_block(TLS_MOUNT_DIR), host=head_host)
    config_hash = hashlib.sha256(config_text.encode()).hexdigest()
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(plan, f"{plan.name}-config", "config"),
        "data": {"fleet.yaml": config_text},
    }
    header = "# Generated by `gymfleet deploy k8s`. No secret values: Secrets are referenced by name.\n"
    files: Bundle = {
        "configmap.yaml": header + _dump([configmap]),
        "head.yaml": header + _dump(_head(plan, config_hash)),
    }
    for svc in plan.services:
        files[f"server-{svc.dns_name}.yaml"] = header + _dump([_server(plan, svc, config_hash)])
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(files),
    }
    files["kustomization.yaml"] = header + yaml.safe_dump(kustomization, sort_keys=False)
    files["README.md"] = _readme(plan)
    plan.assert_no_secret_values(files)
    return files


def _readme(plan: FleetPlan) -> str:
    ns = f" -n {plan.options.namespace}" if plan.options.namespace else ""
    lines = [
        f"# {plan.name}: Kubernetes manifests",
        "",
        "Generated by `gymfleet deploy k8s`. Push the image built from `docker/Dockerfile` as "
        f"`{plan.options.image}` to a registry your cluster pulls from.",
        "",
    ]
    if plan.secrets:
        lines += [
            "Secrets: write `secrets.env` (`NAME=value` lines) with these names, then create the Secret:",
            "",
        ]
        lines += [f"- `{ref.env}` ({ref.path})" for ref in plan.secrets]
        lines += [
            "",
            "```bash",
            f"kubectl{ns} create secret generic {secrets_name(plan)} --from-env-file=secrets.env",
            "```",
            "",
        ]
    if plan.options.token_secret:
        lines += [
            "Fleet token:",
            "",
            "```bash",
            f"kubectl{ns} create secret generic {plan.options.token_secret} "
            '--from-literal=token="$GYMFLEET_TOKEN"',
            "```",
            "",
        ]
    if plan.options.tls:
        tls_name = plan.options.tls.secret or f"{plan.name}-tls"
        lines += [
            "TLS (a certificate for the head Service name and the pods):",
            "",
            "```bash",
            f"kubectl{ns} create secret generic {tls_name} --from-file=tls.crt --from-file=tls.key "
            "--from-file=ca.crt",
            "```",
            "",
        ]
    lines += [
        "```bash",
        f"kubectl{ns} apply -k .",
        f"kubectl{ns} rollout status deploy/{plan.head_dns_name}",
        f"kubectl{ns} port-forward svc/{plan.head_dns_name} {plan.head_port}:{plan.head_port} &",
        f"curl http://127.0.0.1:{plan.head_port}/server_instances",
        "```",
        "",
    ]
    return "\n".join(lines)
