"""``gymfleet deploy compose|k8s|slurm -c fleet.yaml ... -o OUTDIR``: a thin shell over :func:`generate`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI builds its parser on every command: the deploy planner is imported only for deploy
    from gymfleet.deploy._plan import DeployOptions

__all__ = ["add_deploy_parser", "cmd_deploy", "generate"]

TARGETS = ("compose", "k8s", "slurm")


def _env_yaml_values(path: str | None) -> dict[str, Any]:
    import yaml

    from gymfleet.config import search_roots

    candidates = [Path(path)] if path else [root / "env.yaml" for root in search_roots()]
    for candidate in candidates:
        if candidate.is_file():
            data = yaml.safe_load(candidate.read_text()) or {}
            return data if isinstance(data, dict) else {}
    return {}


def generate(
    target: str,
    config_files: Sequence[str],
    outdir: str | Path,
    options: DeployOptions | Mapping[str, Any] | None = None,
    *,
    overrides: Sequence[str] = (),
    env_yaml_path: str | None = None,
) -> list[Path]:
    """Load the fleet config, render ``target`` ("compose", "k8s" or "slurm") and write it under ``outdir``.

    Returns:
        The files written.

    Raises:
        ConfigError: the config does not load; DeployError: it cannot be deployed as asked.
    """
    from gymfleet.config import load_config
    from gymfleet.deploy import plan_fleet, render_compose, render_k8s, render_slurm, write_bundle
    from gymfleet.deploy._plan import DeployError

    renderers = {"compose": render_compose, "k8s": render_k8s, "slurm": render_slurm}
    if target not in renderers:
        raise DeployError(f"Unknown deploy target {target!r}; use one of: {', '.join(TARGETS)}.")
    tokens = list(overrides)
    if config_files:
        tokens.insert(0, "+config_paths=[" + ",".join(config_files) + "]")
    cfg = load_config(tokens, env_yaml_path=env_yaml_path)
    plan = plan_fleet(cfg, options, env_yaml_values=_env_yaml_values(env_yaml_path))
    return write_bundle(renderers[target](plan), outdir)


def _key_values(items: Sequence[str] | None, flag: str) -> dict[str, int]:
    from gymfleet.deploy._plan import DeployError

    out: dict[str, int] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise DeployError(f"{flag} expects NAME=NUMBER (e.g. {flag} my_server=2), got {item!r}.")
        out[name.strip()] = int(value)
    return out


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Only the flags given on the command line (the rest comes from the config's ``deploy:`` block)."""
    from gymfleet.deploy._plan import TlsFiles

    values: dict[str, Any] = {}
    simple = {
        "name": "name",
        "image": "image",
        "namespace": "namespace",
        "head_port": "head_port",
        "server_port": "server_port",
        "cpu": "cpu",
        "memory": "memory",
        "gpus": "gpus",
        "token_secret": "token_secret",
        "nodes": "nodes",
        "time": "time_limit",
        "partition": "partition",
        "account": "account",
        "gymfleet_command": "gymfleet_command",
        "startup_timeout": "startup_timeout_s",
    }
    for arg, field_name in simple.items():
        value = getattr(args, arg, None)
        if value is not None:
            values[field_name] = value
    if getattr(args, "ray", False):
        values["ray"] = True
    if args.replicas:
        values["replicas"] = _key_values(args.replicas, "--replicas")
    if getattr(args, "node", None):
        values["node_of"] = _key_values(args.node, "--node")
    if args.tls or args.tls_secret or args.tls_dir:
        values["tls"] = TlsFiles(secret=args.tls_secret, host_dir=args.tls_dir)
    collect: dict[str, Any] = {}
    for key in ("agent", "input", "output", "num_repeats", "limit", "concurrency"):
        value = getattr(args, f"collect_{key}", None)
        if value is not None:
            collect[key] = value
    if collect:
        values["collect"] = collect
    return values


def cmd_deploy(args: argparse.Namespace) -> int:
    written = generate(
        args.target,
        args.config or [],
        args.output,
        options_from_args(args),
        overrides=args.overrides,
        env_yaml_path=args.env_yaml,
    )
    for path in written:
        sys.stdout.write(f"{path}\n")
    return 0


def add_deploy_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``deploy`` (with ``compose``, ``k8s`` and ``slurm``) to the ``gymfleet`` CLI's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", action="append", metavar="FILE", help="config file (repeatable)")
    common.add_argument(
        "-o", "--output", required=True, metavar="OUTDIR", help="directory for the generated files"
    )
    common.add_argument("--env-yaml", help="env.yaml to read (its values are treated as secrets)")
    common.add_argument("--name", help="prefix of every generated object (default: gymfleet)")
    common.add_argument("--head-port", type=int, help="head port (default: head_server.port, 11000)")
    common.add_argument(
        "--replicas", action="append", metavar="NAME=N", help="instances of a server (repeatable)"
    )
    common.add_argument(
        "--token-secret",
        metavar="NAME",
        help="secret holding the fleet token (k8s Secret name; compose/slurm: enables the token)",
    )
    common.add_argument(
        "--tls", action="store_true", help="serve HTTPS (certificate files from --tls-secret/--tls-dir)"
    )
    common.add_argument("overrides", nargs="*", help="Hydra-style overrides: +k=v ++k=v k=v ~k")

    container = argparse.ArgumentParser(add_help=False)
    container.add_argument("--image", help="image built from docker/Dockerfile (default: gymfleet:latest)")
    container.add_argument("--server-port", type=int, help="port every server listens on in its container")
    container.add_argument("--cpu", help="CPU request per server (e.g. 250m, 2)")
    container.add_argument("--memory", help="memory request per server (e.g. 512Mi, 2Gi)")
    container.add_argument("--gpus", type=int, help="GPUs per server")

    deploy = subparsers.add_parser(
        "deploy", help="generate Docker Compose, Kubernetes or Slurm files from a config"
    )
    targets = deploy.add_subparsers(dest="target", required=True)
    compose = targets.add_parser(
        "compose", parents=[common, container], help="docker-compose.yaml + fleet.yaml"
    )
    compose.add_argument("--tls-dir", help="host directory with tls.crt, tls.key, ca.crt")
    k8s = targets.add_parser(
        "k8s", parents=[common, container], help="Kubernetes manifests (kubectl apply -k)"
    )
    k8s.add_argument("--namespace", help="namespace of every object (default: the current one)")
    k8s.add_argument("--tls-secret", help="Secret with tls.crt, tls.key, ca.crt (default: <name>-tls)")
    slurm = targets.add_parser("slurm", parents=[common], help="a batch script: fleet, rollouts, teardown")
    slurm.add_argument("--nodes", type=int, help="nodes in the allocation (default 1)")
    slurm.add_argument(
        "--node", action="append", metavar="NAME=I", help="node index of a server (repeatable)"
    )
    slurm.add_argument("--time", help="time limit (default 01:00:00)")
    slurm.add_argument("--partition")
    slurm.add_argument("--account")
    slurm.add_argument("--ray", action="store_true", help="start a Ray cluster over the allocation")
    slurm.add_argument("--gymfleet-command", help="how to run gymfleet on the nodes (default: gymfleet)")
    slurm.add_argument("--tls-dir", help="directory with tls.crt, tls.key, ca.crt on the shared filesystem")
    slurm.add_argument("--startup-timeout", type=int, help="seconds to wait for the fleet (default 300)")
    slurm.add_argument("--collect-agent", help="agent for rows without agent_ref")
    slurm.add_argument("--collect-input", help="input JSONL (collect rollouts once the fleet is up)")
    slurm.add_argument("--collect-output", help="output JSONL")
    slurm.add_argument("--collect-num-repeats", dest="collect_num_repeats", type=int)
    slurm.add_argument("--collect-limit", dest="collect_limit", type=int)
    slurm.add_argument("--collect-concurrency", dest="collect_concurrency", type=int)
    for parser in (compose, k8s, slurm):
        parser.set_defaults(func=cmd_deploy, tls_secret=None, tls_dir=None)
    return deploy
