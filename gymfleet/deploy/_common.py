"""Pieces the generators share: the env every container gets, resource unit conversion, file bundles."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from gymfleet.config import CONFIG_FILE_ENV, CONFIG_PATH_ENV
from gymfleet.deploy._plan import BIND_HOST_ENV, PORT_ENV, DeployError, FleetPlan, ServiceSpec

__all__ = ["Bundle", "container_env", "head_env", "write_bundle"]

# Generated files by relative path. Scripts (names ending in .sh / .sbatch) are written executable.
Bundle = dict[str, str]

CONFIG_MOUNT = "/etc/gymfleet/config"
CONFIG_PATH_IN_CONTAINER = f"{CONFIG_MOUNT}/fleet.yaml"
_EXECUTABLE = (".sh", ".sbatch")


def head_env(plan: FleetPlan) -> dict[str, str]:
    return {
        CONFIG_FILE_ENV: CONFIG_PATH_IN_CONTAINER,
        BIND_HOST_ENV: "0.0.0.0",
        PORT_ENV: str(plan.head_port),
    }


def container_env(plan: FleetPlan, svc: ServiceSpec) -> dict[str, str]:
    """Plain (non-secret) env of a server container."""
    env = {
        CONFIG_FILE_ENV: CONFIG_PATH_IN_CONTAINER,
        CONFIG_PATH_ENV: svc.instance,
        BIND_HOST_ENV: "0.0.0.0",
        PORT_ENV: str(plan.options.server_port),
    }
    if svc.secret_envs:
        env["GYMFLEET_REQUIRED_SECRETS"] = ",".join(svc.secret_envs)
    return env


def cpu_to_compose(cpu: str) -> str:
    """Kubernetes CPU ("250m", "2") to Compose ("0.25", "2")."""
    text = cpu.strip()
    try:
        value = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError as exc:
        raise DeployError(
            f"CPU request {cpu!r} is not a number of cores (e.g. '2', '0.5' or '250m')."
        ) from exc
    return f"{value:g}"


_MEM = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]i?)?$")


def memory_to_compose(memory: str) -> str:
    """Kubernetes memory ("512Mi", "1G") to Compose bytes notation ("512m", "1g")."""
    match = _MEM.match(memory.strip())
    if not match:
        raise DeployError(f"Memory request {memory!r} is not a size (e.g. '512Mi', '2Gi', '1G').")
    number, unit = match.groups()
    return f"{number}{(unit or '')[:1].lower()}" if unit else number


def write_bundle(files: Mapping[str, str], outdir: str | Path) -> list[Path]:
    """Write ``files`` under ``outdir`` (created); returns the paths written.

    Raises:
        DeployError: a path would escape ``outdir``.
    """
    root = Path(outdir)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for rel, text in files.items():
        target = (root / rel).resolve()
        if root.resolve() not in target.parents:
            raise DeployError(f"Refusing to write '{rel}' outside the output directory '{root}'.")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        os.chmod(target, 0o755 if rel.endswith(_EXECUTABLE) else 0o644)
        written.append(target)
    return written
