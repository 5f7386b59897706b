"""gymfleet: serve reinforcement-learning environments for LLM training across one machine or many.

The public API is declared here once (``tests/test_exported_members.py`` fails if it drifts). Names are imported
lazily on first use, so ``import gymfleet.server`` in a server process does not pay for the launcher or the CLI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ServerClient": "gymfleet.client",
    "ServerResponse": "gymfleet.client",
    "load_config": "gymfleet.config",
    "ClientError": "gymfleet.errors",
    "ConfigError": "gymfleet.errors",
    "GymFleetError": "gymfleet.errors",
    "HeadUnreachableError": "gymfleet.errors",
    "LauncherError": "gymfleet.errors",
    "RolloutError": "gymfleet.errors",
    "ServerNotFoundError": "gymfleet.errors",
    "UpstreamConnectError": "gymfleet.errors",
    "UpstreamStatusError": "gymfleet.errors",
    "UpstreamTimeoutError": "gymfleet.errors",
    "Fleet": "gymfleet.launcher",
    "LaunchOptions": "gymfleet.launcher",
    "run_fleet": "gymfleet.launcher",
    "BaseResourcesServerConfig": "gymfleet.server",
    "BaseResponsesAPIAgentConfig": "gymfleet.server",
    "BaseResponsesAPIModelConfig": "gymfleet.server",
    "BaseServerConfig": "gymfleet.server",
    "SimpleResourcesServer": "gymfleet.server",
    "SimpleResponsesAPIAgent": "gymfleet.server",
    "SimpleResponsesAPIModel": "gymfleet.server",
    "SimpleServer": "gymfleet.server",
    "current_session_id": "gymfleet.server",
}

__version__ = "0.1.0"

__all__ = [
    "BaseResourcesServerConfig",
    "BaseResponsesAPIAgentConfig",
    "BaseResponsesAPIModelConfig",
    "BaseServerConfig",
    "ClientError",
    "ConfigError",
    "Fleet",
    "GymFleetError",
    "HeadUnreachableError",
    "LaunchOptions",
    "LauncherError",
    "RolloutError",
    "ServerClient",
    "ServerNotFoundError",
    "ServerResponse",
    "SimpleResourcesServer",
    "SimpleResponsesAPIAgent",
    "SimpleResponsesAPIModel",
    "SimpleServer",
    "UpstreamConnectError",
    "UpstreamStatusError",
    "UpstreamTimeoutError",
    "__version__",
    "current_session_id",
    "load_config",
    "run_fleet",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gymfleet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
