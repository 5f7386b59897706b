"""What to deploy: a fleet config turned into a plan (head + one service per server) every generator reads.

The plan is pure data computed from a loaded config and :class:`DeployOptions`; the generators (compose,
k8s, slurm) only format it. Options come from the config's optional top-level ``deploy:`` block, then from
the command line (CLI wins). Secrets never enter the plan's config: see :mod:`gymfleet.deploy._secrets`."""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gymfleet.config import DEFAULT_HEAD_PORT, iter_instances
from gymfleet.deploy._secrets import SecretRef, scrub_secrets, secret_envs_of
from gymfleet.errors import ConfigError, NoServerInstancesError

__all__ = ["DeployError", "DeployOptions", "FleetPlan", "ServiceSpec", "TlsFiles", "plan_fleet"]

# Where things live inside the image and the containers (docker/Dockerfile agrees).
APP_DIR = "/app"
CONFIG_MOUNT_DIR = "/etc/gymfleet"
CONFIG_FILE_NAME = "fleet.yaml"
TLS_MOUNT_DIR = "/etc/gymfleet/tls"
SECRETS_MOUNT_DIR = "/run/secrets"
# Env vars the container entrypoint and the security layer read; the token is only ever set from a secret.
TOKEN_ENV = "GYMFLEET_TOKEN"
TOKEN_KEY = "fleet_token"  # a token in the config is moved to a secret: deployments read it from TOKEN_ENV
ENV_SECRETS_KEY = "env_secret_values"  # the loader's list of env.yaml values: never shipped
BIND_HOST_ENV = "GYMFLEET_BIND_HOST"
PORT_ENV = "GYMFLEET_PORT"

_DNS_LABEL = re.compile(r"[^a-z0-9-]+")


class DeployError(ConfigError):
    """The fleet config or the deploy options cannot be turned into deployment files."""


@dataclass(frozen=True)
class TlsFiles:
    """TLS material for every server and the head (the config's ``tls:`` block points at these files).

    For Kubernetes the files come from a Secret (``secret``, keys = the file names) mounted at
    ``/etc/gymfleet/tls``; for Compose from a host directory (``host_dir``) mounted there read-only; for
    Slurm from ``host_dir`` on the shared filesystem (default: the config's own ``tls:`` paths).
    """

    cert_file: str = "tls.crt"
    key_file: str = "tls.key"
    ca_file: str | None = "ca.crt"
    secret: str | None = None
    host_dir: str | None = None


@dataclass(frozen=True)
class DeployOptions:
    """How to deploy; every field may also be set in the config's ``deploy:`` block.

    Attributes:
        name: prefix of every generated object (k8s names, compose project, Slurm job).
        image: the container image built from ``docker/Dockerfile``.
        namespace: Kubernetes namespace (None: the current one).
        head_port: the head's port; default: the config's ``head_server.port`` (11000).
        server_port: the port every server listens on inside its container or pod.
        replicas: instances per server name (default 1 each).
        cpu / memory: resource requests per server container; ``gpus`` adds ``nvidia.com/gpu`` limits.
        server_resources: per-server overrides ``{name: {cpu, memory, gpus}}``.
        token_secret: name of the secret that holds the fleet token (key ``token``); None: no token.
        tls: TLS files; None: plain HTTP.
        nodes, time_limit, partition, account: Slurm allocation.
        node_of: Slurm node index per server name (default: round-robin over the nodes).
        ray: start a Ray head on the first Slurm node and Ray workers on the others.
        gymfleet_command: how the Slurm script runs gymfleet on the nodes.
        collect: Slurm rollout collection ``{agent, input, output, num_repeats, limit, concurrency}``.
        startup_timeout_s: how long the Slurm script waits for the fleet to be ready.
    """

    name: str = "gymfleet"
    image: str = "gymfleet:latest"
    namespace: str | None = None
    head_port: int | None = None
    server_port: int = 8000
    replicas: Mapping[str, int] = field(default_factory=dict)
    cpu: str = "250m"
    memory: str = "512Mi"
    gpus: int = 0
    server_resources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    token_secret: str | None = None
    tls: TlsFiles | None = None
    nodes: int = 1
    time_limit: str = "01:00:00"
    partition: str | None = None
    account: str | None = None
    node_of: Mapping[str, int] = field(default_factory=dict)
    ray: bool = False
    gymfleet_command: str = "gymfleet"
    collect: Mapping[str, Any] | None = None
    startup_timeout_s: int = 300

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: DeployOptions | None = None) -> DeployOptions:
        """Options from a ``deploy:`` block (unknown keys are an error, with the known ones listed)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DeployError(
                f"Unknown deploy option(s) {', '.join(map(repr, unknown))} in the 'deploy:' block. "
                f"Known options: {', '.join(sorted(known))}.",
                key="deploy",
            )
        updates = dict(values)
        tls = updates.get("tls")
        if isinstance(tls, Mapping):
            updates["tls"] = TlsFiles(**{k: v for k, v in tls.items() if v is not None})
        return replace(base or cls(), **updates)


@dataclass(frozen=True)
class ServiceSpec:
    """One server instance as a deployable service."""

    instance: str  # the instance name in the config (what peers and the head call it)
    dns_name: str  # a DNS-1123 label derived from it, unique within the plan
    server_type: str
    impl: str
    replicas: int
    cpu: str
    memory: str
    gpus: int
    node: int  # Slurm node index (0 = the head's node)
    secret_envs: tuple[str, ...] = ()  # env vars of the secrets this server's block refers to


@dataclass(frozen=True)
class FleetPlan:
    """Everything a generator needs: the secret-free config, the head and the services."""

    options: DeployOptions
    config: dict[str, Any]  # the fleet config to ship: no secret values, instance host/port removed
    head_port: int
    head_dns_name: str
    services: tuple[ServiceSpec, ...]
    secrets: tuple[SecretRef, ...]
    secret_values: tuple[str, ...] = field(repr=False, default=())  # only to check no output contains them

    @property
    def name(self) -> str:
        return self.options.name

    def tls_block(self, directory: str) -> dict[str, str]:
        """The config's ``tls:`` block for certificate files in ``directory`` (empty when TLS is off)."""
        tls = self.options.tls
        if tls is None:
            return {}
        block = {"cert_file": f"{directory}/{tls.cert_file}", "key_file": f"{directory}/{tls.key_file}"}
        if tls.ca_file:
            block["ca_file"] = f"{directory}/{tls.ca_file}"
        return block

    def config_yaml(self, *, tls: Mapping[str, str] | None = None, **head_overrides: Any) -> str:
        """The config as YAML, with ``head_server`` fields and the ``tls:`` block replaced when given."""
        import yaml

        config = copy.deepcopy(self.config)
        config["head_server"] = {**config.get("head_server", {}), **head_overrides}
        if tls:
            config["tls"] = dict(tls)
        text = "# Generated by `gymfleet deploy`: secrets are ${oc.env:...} references, never values.\n"
        return text + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)

    def assert_no_secret_values(self, files: Mapping[str, str]) -> None:
        """Raise if any generated file contains a secret value (a key interpolated into a URL, say)."""
        for value in self.secret_values:
            for path, text in files.items():
                if value in text:
                    raise DeployError(
                        f"The generated file '{path}' would contain the value of a secret. That happens "
                        "when a secret is written into another value (e.g. an API key inside a URL). Move "
                        "the secret into its own key (e.g. 'api_key: ...') and refer to it with ${...}.",
                    )


def dns_label(text: str, *, max_len: int = 63) -> str:
    """``text`` as a DNS-1123 label (lowercase, digits, '-'), shortened with a hash suffix when too long."""
    label = _DNS_LABEL.sub("-", text.lower()).strip("-") or "x"
    if not label[0].isalpha():
        label = "s-" + label
    if len(label) > max_len:
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        label = label[: max_len - 9].rstrip("-") + "-" + digest
    return label


def _plain(config: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=False)  # type: ignore[return-value]
    return copy.deepcopy(dict(config))


def _resources(options: DeployOptions, name: str) -> tuple[str, str, int]:
    override = dict(options.server_resources.get(name) or {})
    unknown = set(override) - {"cpu", "memory", "gpus"}
    if unknown:
        raise DeployError(
            f"deploy.server_resources.{name} has unknown key(s) {sorted(unknown)}; use cpu, memory and gpus.",
            key=f"deploy.server_resources.{name}",
        )
    return (
        str(override.get("cpu", options.cpu)),
        str(override.get("memory", options.memory)),
        int(override.get("gpus", options.gpus)),
    )


def plan_fleet(
    config: DictConfig | Mapping[str, Any],
    options: DeployOptions | Mapping[str, Any] | None = None,
    *,
    env_yaml_values: Mapping[str, Any] | None = None,
) -> FleetPlan:
    """Turn a loaded fleet config into a :class:`FleetPlan`.

    Args:
        config: the config from :func:`gymfleet.config.load_config` (interpolations kept).
        options: options over the config's ``deploy:`` block: a mapping of the fields to set, or a
            :class:`DeployOptions` whose fields that differ from the defaults win.
        env_yaml_values: the contents of env.yaml, whose values are all treated as secrets.

    Raises:
        NoServerInstancesError: the config defines no server.
        DeployError: a bad option (unknown server in ``replicas``, replicas < 1, too few Slurm nodes, ...).
    """
    plain = _plain(config)
    block = plain.pop("deploy", None) or {}
    if not isinstance(block, Mapping):
        raise DeployError(f"'deploy:' must be a mapping of options, got {block!r}.", key="deploy")
    opts = DeployOptions.from_mapping(block)
    if isinstance(options, DeployOptions):
        opts = _overlay(opts, options)
    elif options is not None:
        opts = DeployOptions.from_mapping(options, base=opts)
    instances = iter_instances(OmegaConf.create(plain))
    if not instances:
        raise NoServerInstancesError(
            "This config defines no server instances, so there is nothing to deploy. Pass the config files "
            "of your servers with -c (e.g. -c resources_servers/<name>/configs/<name>.yaml)."
        )
    names = [inst.name for inst in instances]
    for label, mapping in (
        ("replicas", opts.replicas),
        ("node_of", opts.node_of),
        ("server_resources", opts.server_resources),
    ):
        for key in mapping:
            if key not in names:
                raise DeployError(
                    f"deploy.{label} names '{key}', which is not a server of this config. Servers: "
                    f"{', '.join(names)}.",
                    key=f"deploy.{label}.{key}",
                )
    if opts.nodes < 1:
        raise DeployError(f"deploy.nodes must be at least 1, got {opts.nodes}.", key="deploy.nodes")
    plain.pop("config_paths", None)  # already merged; host paths mean nothing where the fleet runs
    plain.pop(
        ENV_SECRETS_KEY, None
    )  # a list of secret values: each deployment gets them from its secret store
    if plain.pop(TOKEN_KEY, None) and not opts.token_secret:
        opts = replace(opts, token_secret=f"{opts.name}-token")
    if plain.get("tls") and opts.tls is None:
        opts = replace(opts, tls=TlsFiles())
    head = plain.get("head_server") or {}
    head_port = int(opts.head_port or head.get("port") or DEFAULT_HEAD_PORT)
    head_dns = dns_label(f"{opts.name}-head")
    plain["head_server"] = {k: v for k, v in head.items() if k not in ("host", "port")}
    plain["head_server"].update({"host": head_dns, "port": head_port})

    scrubbed, refs, values = scrub_secrets(plain, env_yaml_values or {})
    services: list[ServiceSpec] = []
    used = {head_dns}
    for index, inst in enumerate(instances):
        impl_block = scrubbed[inst.name][inst.server_type][inst.impl]
        # Where a server runs and listens is decided where it runs (container env, launcher), and peers find
        # it through the head's registry; a host:port here would route every peer to its own loopback.
        impl_block.pop("host", None)
        impl_block.pop("port", None)
        replicas = int(opts.replicas.get(inst.name, 1))
        if replicas < 1:
            raise DeployError(
                f"deploy.replicas.{inst.name} must be at least 1, got {replicas}.",
                key=f"deploy.replicas.{inst.name}",
            )
        node = int(opts.node_of.get(inst.name, index % opts.nodes))
        if not 0 <= node < opts.nodes:
            raise DeployError(
                f"deploy.node_of.{inst.name} = {node}, but the allocation has {opts.nodes} node(s) "
                f"(0..{opts.nodes - 1}). Raise deploy.nodes or pick another node.",
                key=f"deploy.node_of.{inst.name}",
            )
        dns = dns_label(f"{opts.name}-{inst.name}")
        if dns in used:
            dns = dns_label(f"{opts.name}-{inst.name}-{index}")
        used.add(dns)
        cpu, memory, gpus = _resources(opts, inst.name)
        needs = secret_envs_of(scrubbed, scrubbed[inst.name])
        services.append(
            ServiceSpec(inst.name, dns, inst.server_type, inst.impl, replicas, cpu, memory, gpus, node, needs)
        )
    return FleetPlan(opts, scrubbed, head_port, head_dns, tuple(services), tuple(refs), tuple(values))


def _overlay(base: DeployOptions, cli: DeployOptions) -> DeployOptions:
    """Fields the CLI changed from the defaults win over the config's ``deploy:`` block."""
    defaults = DeployOptions()
    changed = {
        f.name: getattr(cli, f.name) for f in fields(cli) if getattr(cli, f.name) != getattr(defaults, f.name)
    }
    return replace(base, **changed)
