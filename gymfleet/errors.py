"""The gymfleet error tree.

Every error gymfleet raises on purpose derives from :class:`GymFleetError`. Messages say what went
wrong, where (file, key path, server name, URL) and what to do next.

    GymFleetError
    ├── ConfigError                      bad configuration (files, overrides, env vars)
    │   ├── ConfigFileNotFoundError      a config path that exists under none of the search roots
    │   ├── MalformedConfigError         YAML/JSON that does not parse, or a value of the wrong shape
    │   ├── OverrideError                a CLI override that cannot be parsed or applied
    │   ├── ConfigMissingValuesError     ``???`` values left after merging (all reported at once)
    │   ├── ConfigInterpolationError     ``${...}`` that cannot be resolved
    │   ├── InvalidServerConfigError     a server instance block that fails validation
    │   ├── ServerRefNotFoundError       a ``{type, name}`` reference to an instance that does not exist
    │   └── NoServerInstancesError       a fleet config with no server in it
    ├── ClientError                      a call from one server (or a script) to another failed
    │   ├── HeadUnreachableError         "Could not connect to head server at ..."
    │   ├── ServerNotFoundError          a server name nobody knows (suggests close names)
    │   ├── UpstreamConnectError         could not open a connection (refused, unreachable, DNS)
    │   ├── UpstreamTimeoutError         connect or total deadline passed
    │   ├── UpstreamDisconnectedError    the peer closed the connection mid-request
    │   └── UpstreamStatusError          the peer answered with an error status (carries status and body)
    ├── ServerError                      a server could not start or serve
    │   ├── AddressError                 an address that cannot be bound or must not be advertised
    │   └── PortInUseError               a port someone else holds (names the holder when known)
    ├── LauncherError                    the fleet launcher could not bring the fleet up or keep it up
    │   ├── ServerStartupError           a server exited or never answered during startup (last log lines)
    │   └── RestartBudgetExceededError   a server crashed more often than its restart budget allows
    ├── RolloutError                     rollout collection failed as a whole
    │   ├── DatasetError                 a broken input row (file and line number)
    │   └── ResumeMismatchError          resume refused: the dataset or agent changed
    └── MissingExtraError                an optional extra is not installed (names the pip command)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AddressError",
    "ClientError",
    "ConfigError",
    "ConfigFileNotFoundError",
    "ConfigInterpolationError",
    "ConfigMissingValuesError",
    "DatasetError",
    "GymFleetError",
    "HeadUnreachableError",
    "InvalidServerConfigError",
    "LauncherError",
    "MalformedConfigError",
    "MissingExtraError",
    "NoServerInstancesError",
    "OverrideError",
    "PortInUseError",
    "RestartBudgetExceededError",
    "ResumeMismatchError",
    "RolloutError",
    "ServerError",
    "ServerNotFoundError",
    "ServerRefNotFoundError",
    "ServerStartupError",
    "UpstreamConnectError",
    "UpstreamDisconnectedError",
    "UpstreamStatusError",
    "UpstreamTimeoutError",
]


class GymFleetError(Exception):
    """Root of every error gymfleet raises on purpose."""


# --------------------------------------------------------------------------------------------- config
class ConfigError(GymFleetError):
    """The configuration is wrong. The message names the file and/or key path and the fix."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.key = key


class ConfigFileNotFoundError(ConfigError):
    pass


class MalformedConfigError(ConfigError):
    pass


class OverrideError(ConfigError):
    pass


class ConfigMissingValuesError(ConfigError):
    def __init__(self, message: str, *, keys: list[str]) -> None:
        super().__init__(message)
        self.keys = keys


class ConfigInterpolationError(ConfigError):
    pass


class InvalidServerConfigError(ConfigError):
    def __init__(self, message: str, *, server_name: str | None = None, key: str | None = None) -> None:
        super().__init__(message, key=key)
        self.server_name = server_name


class ServerRefNotFoundError(ConfigError):
    def __init__(self, message: str, *, server_name: str, suggestions: list[str] | None = None) -> None:
        super().__init__(message)
        self.server_name = server_name
        self.suggestions = suggestions or []


class NoServerInstancesError(ConfigError):
    pass


# --------------------------------------------------------------------------------------------- client
class ClientError(GymFleetError):
    """A call to another server failed. Carries the server name, the URL and the cause."""

    def __init__(self, message: str, *, server_name: str | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.server_name = server_name
        self.url = url


class HeadUnreachableError(ClientError):
    pass


class ServerNotFoundError(ClientError):
    def __init__(self, message: str, *, server_name: str, suggestions: list[str] | None = None) -> None:
        super().__init__(message, server_name=server_name)
        self.suggestions = suggestions or []


class UpstreamConnectError(ClientError):
    pass


class UpstreamTimeoutError(ClientError):
    pass


class UpstreamDisconnectedError(ClientError):
    pass


class UpstreamStatusError(ClientError):
    def __init__(
        self,
        message: str,
        *,
        status: int,
        body: Any = None,
        server_name: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, server_name=server_name, url=url)
        self.status = status
        self.body = body


# --------------------------------------------------------------------------------------------- server
class ServerError(GymFleetError):
    pass


class AddressError(ServerError):
    pass


class PortInUseError(ServerError):
    def __init__(self, message: str, *, host: str, port: int) -> None:
        super().__init__(message)
        self.host = host
        self.port = port


# --------------------------------------------------------------------------------------------- launcher
class LauncherError(GymFleetError):
    pass


class ServerStartupError(LauncherError):
    def __init__(self, message: str, *, server_name: str, last_lines: list[str] | None = None) -> None:
        super().__init__(message)
        self.server_name = server_name
        self.last_lines = last_lines or []


class RestartBudgetExceededError(LauncherError):
    def __init__(self, message: str, *, server_name: str) -> None:
        super().__init__(message)
        self.server_name = server_name


# --------------------------------------------------------------------------------------------- rollouts
class RolloutError(GymFleetError):
    pass


class DatasetError(RolloutError):
    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


class ResumeMismatchError(RolloutError):
    pass


# --------------------------------------------------------------------------------------------- extras
class MissingExtraError(GymFleetError, ImportError):
    """An optional dependency is missing; the message names the exact install command."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the optional package '{module}', which is not installed. "
            f"Install it with: pip install 'gymfleet[{extra}]'"
        )
        self.extra = extra
        self.module = module
