"""Launch and supervise a node's part of a fleet.

Submodules: ``supervisor`` (Fleet), ``process`` (ManagedProcess), ``ports``, ``addresses``, ``logs``, ``lifeline``,
``run`` (foreground run). Names below are imported lazily: server processes import ``ports``/``addresses`` without
paying for the supervisor.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Fleet": "gymfleet.launcher.supervisor",
    "LaunchOptions": "gymfleet.launcher.supervisor",
    "Mode": "gymfleet.launcher.supervisor",
    "ManagedProcess": "gymfleet.launcher.process",
    "ProcessState": "gymfleet.launcher.process",
    "RestartPolicy": "gymfleet.launcher.process",
    "run_fleet": "gymfleet.launcher.run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gymfleet.launcher' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
