"""Typed errors of the Ray integration and of offloaded work (Ray tasks or the local process pool).

    GymFleetError
    ├── ConfigError
    │   └── RayAddressError            ``ray_head_node_address`` is not ``ray://host:port`` or ``host:port``
    ├── ServerError
    │   └── RayConnectError            this process could not join the Ray cluster
    │       ├── RayVersionMismatchError  the cluster runs another Ray (or Python) version than this process
    │       └── RayAuthError           the cluster wants an auth token we do not have (or a wrong one)
    ├── LauncherError
    │   └── RayClusterStartError       the launcher could not start the fleet's local Ray cluster
    └── OffloadError                   one offloaded call failed (carries the function name and backend)
        ├── OffloadTimeoutError        the call ran past its timeout and was killed
        ├── RemoteTaskError            the function raised; carries the remote type, message and traceback
        └── WorkerLostError            the worker process (or its node) died while running the call

``MissingExtraError`` (from :mod:`gymfleet.errors`) is raised when Ray is not installed.
"""

from __future__ import annotations

from gymfleet.errors import ConfigError, GymFleetError, LauncherError, ServerError

__all__ = [
    "OffloadError",
    "OffloadTimeoutError",
    "RayAddressError",
    "RayAuthError",
    "RayClusterStartError",
    "RayConnectError",
    "RayVersionMismatchError",
    "RemoteTaskError",
    "WorkerLostError",
]


class RayAddressError(ConfigError):
    """``ray_head_node_address`` cannot be parsed."""


class RayConnectError(ServerError):
    """This process could not join the Ray cluster at ``address``."""

    def __init__(self, message: str, *, address: str | None = None) -> None:
        super().__init__(message)
        self.address = address


class RayVersionMismatchError(RayConnectError):
    """Ray or Python differ between this process and the cluster (Ray refuses to mix them)."""


class RayAuthError(RayConnectError):
    """The cluster uses token authentication and this process has no (or a wrong) token."""


class RayClusterStartError(LauncherError):
    """``ray start --head`` for the fleet's local cluster failed or did not come up in time."""


class OffloadError(GymFleetError):
    """An offloaded call failed. ``function`` is its qualified name, ``backend`` is ``ray`` or ``local``."""

    def __init__(self, message: str, *, function: str, backend: str) -> None:
        super().__init__(message)
        self.function = function
        self.backend = backend


class OffloadTimeoutError(OffloadError):
    """The call did not finish within ``timeout_s``; its worker was killed (Ray: ``ray.cancel(force)``)."""

    def __init__(self, message: str, *, function: str, backend: str, timeout_s: float) -> None:
        super().__init__(message, function=function, backend=backend)
        self.timeout_s = timeout_s


class RemoteTaskError(OffloadError):
    """The function raised; ``remote_type`` / ``remote_message`` / ``remote_traceback`` describe it."""

    def __init__(
        self,
        message: str,
        *,
        function: str,
        backend: str,
        remote_type: str,
        remote_message: str,
        remote_traceback: str = "",
    ) -> None:
        super().__init__(message, function=function, backend=backend)
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback


class WorkerLostError(OffloadError):
    """The process running the call died (crash, OOM kill, node loss) before it answered."""
