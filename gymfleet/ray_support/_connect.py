"""Join the fleet's Ray cluster from a server process: lazily, once, with a deadline, with typed errors.

``import ray`` happens here and only here, on first use: a server that never offloads never pays for Ray.
The settings come from the fleet config (:func:`configure`, called by the server runtime) and are read
from these keys::

    ray_head_node_address: "ray://host:10001" | "host:6379"   # which cluster (NeMo Gym's key)
    ray_auth_token_path: /path/to/token      # token auth (Ray >= 2.52); else RAY_AUTH_TOKEN[_PATH] env
    ray_connect_timeout_s: 60                # joining takes longer than this: RayConnectError
    ray_namespace: gymfleet
    ray_log_to_driver: false                 # stream task stdout/stderr into this server's log
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from gymfleet.errors import MissingExtraError
from gymfleet.ray_support._address import RayAddress, parse_ray_address
from gymfleet.ray_support._errors import RayAuthError, RayConnectError, RayVersionMismatchError

__all__ = [
    "LOOPBACK_ENV",
    "RaySettings",
    "configure",
    "connect",
    "connect_sync",
    "current_settings",
    "import_ray",
    "is_connected",
    "settings_from_config",
    "shutdown",
]

logger = logging.getLogger("gymfleet.ray")

# Ray replaces a loopback address by the machine's routable IP unless this is "0" (its single-host mode, the
# default on macOS/Windows). A loopback-only cluster needs it in every process that joins it.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_VERSION_RE = re.compile(r"Ray: (\S+)\s+Python: (\S+)")


@dataclass(frozen=True)
class RaySettings:
    """How this process joins Ray. ``address`` None: no cluster configured (Ray work cannot run)."""

    address: RayAddress | None = None
    auth_token_path: str | None = None
    connect_timeout_s: float = 60.0
    namespace: str = "gymfleet"
    log_to_driver: bool = False


def settings_from_config(config: Mapping[str, Any]) -> RaySettings:
    """Read the ``ray_*`` keys of a fleet config (see the module docstring). Raises RayAddressError."""
    raw = config.get("ray_head_node_address")
    token = config.get("ray_auth_token_path")
    return RaySettings(
        address=parse_ray_address(raw) if raw else None,
        auth_token_path=str(token) if token else None,
        connect_timeout_s=float(config.get("ray_connect_timeout_s") or 60.0),
        namespace=str(config.get("ray_namespace") or "gymfleet"),
        log_to_driver=bool(config.get("ray_log_to_driver", False)),
    )


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.settings = RaySettings()
        self.joining: concurrent.futures.Future[None] | None = None
        self.connected_to: RayAddress | None = None


_state = _State()


def configure(config: Mapping[str, Any] | RaySettings) -> RaySettings:
    """Remember how to join Ray (no import, no connection). Later :func:`connect` calls use these settings."""
    settings = config if isinstance(config, RaySettings) else settings_from_config(config)
    with _state.lock:
        _state.settings = settings
    return settings


def current_settings() -> RaySettings:
    return _state.settings


def import_ray(feature: str = "Ray offload (ray_head_node_address / `ray: true`)") -> ModuleType:
    """``import ray`` or raise :class:`MissingExtraError` naming ``pip install 'gymfleet[ray]'``."""
    try:
        import ray
    except ImportError as exc:
        raise MissingExtraError(feature, "ray", "ray") from exc
    return ray


def is_connected() -> bool:
    """True once this process has joined a cluster (never imports Ray)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and _state.connected_to is not None and ray.is_initialized())


def _prepare_environment(settings: RaySettings) -> None:
    """Environment Ray reads at import/init time: set before ``import ray`` (or re-read as Ray does)."""
    address = settings.address
    if address is not None and address.kind == "gcs" and address.is_loopback:
        os.environ.setdefault(LOOPBACK_ENV, "0")
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None and os.environ[LOOPBACK_ENV] == "0":
            constants.ENABLE_RAY_CLUSTER = False  # Ray read the variable at import, before we could set it
    if settings.auth_token_path:
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN_PATH"] = settings.auth_token_path
        raylet = sys.modules.get("ray._raylet")
        if raylet is not None:
            raylet.Config.initialize("")  # what Ray's own token setup does to re-read RAY_AUTH_MODE


def _check_reachable(address: RayAddress, timeout_s: float) -> None:
    # ray.init retries an unreachable GCS for minutes, logging every 5 s: fail fast and clearly instead.
    form = "ray://HOST:10001" if address.kind == "client" else "HOST:6379"
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise RayConnectError(
            f"Could not reach the Ray cluster at {address} ({exc}). Check ray_head_node_address: it must be "
            f"the address `ray start --head` printed ({form}), reachable from this machine (firewall, "
            "node IP, port).",
            address=str(address),
        ) from exc


def _probe_gcs(ray: ModuleType, address: RayAddress) -> None:
    # ray.init answers a missing/wrong token only after ~20 s of retries, with a generic ConnectionError; one
    # GCS client call says "unauthenticated" in milliseconds. A private Ray API: skipped if it is not there.
    try:
        gcs_client_class = ray._raylet.GcsClient
    except AttributeError:
        return
    try:
        gcs_client_class(address=address.url)
    except Exception as exc:
        if type(exc).__name__ == "AuthenticationError":
            raise translate_connect_error(exc, address) from exc
        logger.debug("GCS probe of %s: %s (ray.init will tell)", address, exc)


def translate_connect_error(exc: BaseException, address: RayAddress | str) -> RayConnectError:
    """Turn what ``ray.init`` raised into a typed error whose message says what to do."""
    text = str(exc)
    if "Version mismatch" in text:
        versions = _VERSION_RE.findall(text)
        if len(versions) >= 2:
            (cluster_ray, cluster_py), (ours_ray, ours_py) = versions[0], versions[1]
            detail = (
                f"the cluster runs Ray {cluster_ray} on Python {cluster_py}, this process has Ray {ours_ray} "
                f"on Python {ours_py}"
            )
        else:
            detail = text.strip().splitlines()[0]
            cluster_ray = "<the cluster's version>"
        return RayVersionMismatchError(
            f"Could not join the Ray cluster at {address}: {detail}. Ray requires the same Ray version and "
            "the same Python version (patch level for drivers, minor level for ray:// clients) on every node "
            f"and client. Install 'ray[default]=={cluster_ray}' in this server's environment (or restart the "
            "cluster with this environment's Ray), on the cluster's Python version.",
            address=str(address),
        )
    auth_error = type(exc).__name__ == "AuthenticationError"
    if auth_error or "authentication token" in text.lower() or "unauthenticated" in text.lower():
        return RayAuthError(
            f"Could not join the Ray cluster at {address}: it uses token authentication and this process has "
            f"no token or a wrong one ({text.strip()[:300]}). Set ray_auth_token_path in the fleet config "
            "to a file holding the cluster's token (print it on the head with `ray get-auth-token`), or "
            "export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH.",
            address=str(address),
        )
    hint = ""
    if "No node info found" in text or "no raylet" in text.lower():
        hint = (
            " A GCS address works only on a machine that runs a node of that cluster (the driver uses the "
            "local raylet): run `ray start --address=...` here, or use the Ray Client form ray://HEAD:10001."
        )
    elif str(address).startswith("ray://"):
        hint = (
            " Check that the Ray Client server listens there (`ray start --head "
            "--ray-client-server-port=...`); if the cluster uses token authentication, set "
            "ray_auth_token_path."
        )
    return RayConnectError(
        f"Could not join the Ray cluster at {address}: {type(exc).__name__}: {text.strip()[:500]}.{hint}",
        address=str(address),
    )


# The Ray Client proxy starts one "specific server" process per client; on a loaded machine that start can fail once
# ("Initialization failure from server ... Starting Ray client server failed") and succeed on the next connection.
_TRANSIENT_CLIENT_FAILURES = ("Initialization failure from server", "Starting Ray client server failed")
_CLIENT_INIT_ATTEMPTS = 3


def connect_sync(settings: RaySettings | None = None) -> None:
    """Join the cluster (blocking). Idempotent. Prefer :func:`connect` from async code."""
    settings = settings or _state.settings
    if settings.address is None:
        raise RayConnectError(
            "No Ray cluster is configured for this process. Set ray_head_node_address in the fleet config "
            "(or mark a server with `ray: true` so the launcher starts a local cluster).",
        )
    address = settings.address
    _prepare_environment(settings)
    ray = import_ray()
    if ray.is_initialized():
        _state.connected_to = _state.connected_to or address
        return
    _check_reachable(address, timeout_s=min(5.0, settings.connect_timeout_s))
    if address.kind == "gcs":
        _probe_gcs(ray, address)
    logger.info("joining the Ray cluster at %s", address)
    deadline = time.monotonic() + settings.connect_timeout_s
    for attempt in range(1, _CLIENT_INIT_ATTEMPTS + 1):
        try:
            ray.init(
                address=address.url,
                namespace=settings.namespace,
                log_to_driver=settings.log_to_driver,
                logging_level=logging.WARNING,
            )
            break
        except Exception as exc:
            delay = float(attempt)
            transient = address.kind == "client" and any(m in str(exc) for m in _TRANSIENT_CLIENT_FAILURES)
            if not transient or attempt == _CLIENT_INIT_ATTEMPTS or time.monotonic() + delay > deadline:
                raise translate_connect_error(exc, address) from exc
            logger.warning("the Ray Client server at %s could not start a session for us (%s); retry %d/%d in %.0fs",
                           address, str(exc).strip().splitlines()[0][:200], attempt, _CLIENT_INIT_ATTEMPTS - 1, delay)
            with contextlib.suppress(Exception):
                ray.shutdown()  # drop the half-made client context before the next ray.init
            time.sleep(delay)
    _state.connected_to = address
    logger.info("joined the Ray cluster at %s", address)


async def connect(settings: RaySettings | None = None, *, timeout_s: float | None = None) -> None:
    """Join the cluster without blocking the event loop; concurrent callers share one attempt.

    Raises:
        MissingExtraError: Ray is not installed.
        RayConnectError: unreachable, refused, no answer within ``timeout_s`` (default
            ``ray_connect_timeout_s``), or (subclasses) a version mismatch or missing auth token.
    """
    if is_connected():
        return
    settings = settings or _state.settings
    with _state.lock:
        joining = _state.joining
        if joining is None or (joining.done() and joining.exception() is not None):
            joining = concurrent.futures.Future()
            _state.joining = joining
            threading.Thread(
                target=_join_thread, args=(settings, joining), name="gymfleet-ray-join", daemon=True
            ).start()
    timeout = settings.connect_timeout_s if timeout_s is None else timeout_s
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(joining)), timeout)
    except asyncio.TimeoutError:
        raise RayConnectError(
            f"Joining the Ray cluster at {settings.address} did not finish within {timeout:.0f}s. Is the "
            "cluster up and reachable from this node (GCS port and every node's ports)? Raise "
            "ray_connect_timeout_s on a slow or busy machine.",
            address=str(settings.address),
        ) from None


def _join_thread(settings: RaySettings, future: concurrent.futures.Future[None]) -> None:
    # ray.init may block for a long time (it retries the GCS): a daemon thread keeps the event loop free.
    try:
        connect_sync(settings)
    except BaseException as exc:
        future.set_exception(exc)
    else:
        future.set_result(None)


def shutdown() -> None:
    """Leave the cluster (``ray.shutdown()``); only if this process joined it."""
    ray = sys.modules.get("ray")
    with _state.lock:
        _state.joining = None
        joined, _state.connected_to = _state.connected_to, None
    if ray is not None and joined is not None and ray.is_initialized():
        ray.shutdown()
