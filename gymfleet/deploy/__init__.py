"""Deployment files from a fleet config: Docker Compose, Kubernetes manifests, a Slurm batch script.

``plan_fleet(config, options)`` turns a loaded config into a :class:`FleetPlan` (secrets replaced by env
references); ``render_compose`` / ``render_k8s`` / ``render_slurm`` turn a plan into files (a ``{path:
text}`` bundle) and ``write_bundle`` writes them. ``gymfleet deploy compose|k8s|slurm`` is the CLI over
the same functions. Names are imported lazily: the container entrypoint (``gymfleet.deploy.container``)
stays light."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DeployError": "gymfleet.deploy._plan",
    "DeployOptions": "gymfleet.deploy._plan",
    "FleetPlan": "gymfleet.deploy._plan",
    "ServiceSpec": "gymfleet.deploy._plan",
    "TlsFiles": "gymfleet.deploy._plan",
    "plan_fleet": "gymfleet.deploy._plan",
    "SecretRef": "gymfleet.deploy._secrets",
    "write_bundle": "gymfleet.deploy._common",
    "render_compose": "gymfleet.deploy.compose",
    "render_k8s": "gymfleet.deploy.k8s",
    "render_slurm": "gymfleet.deploy.slurm",
    "generate": "gymfleet.deploy.cli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gymfleet.deploy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
