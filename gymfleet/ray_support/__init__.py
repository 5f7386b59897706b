"""Ray for gymfleet: join the fleet's cluster and offload CPU-heavy work without blocking a server's loop.

``ray`` itself is imported only when first needed (it is the optional extra ``gymfleet[ray]``; without it,
features that need Ray raise :class:`~gymfleet.errors.MissingExtraError` naming
``pip install 'gymfleet[ray]'``).

In a server::

    from gymfleet import ray_support

    value = await ray_support.run(check, answer, expected, timeout=10.0, num_cpus=1)

or, to fall back to a local pool of killable processes when the fleet has no cluster::

    offloader = ray_support.Offloader(ray_support.ray_mode(block))
    result = await offloader.run_traced(check, answer, expected, timeout=10.0)

Config keys: ``ray_head_node_address`` (``ray://host:10001`` or ``host:6379``), ``ray_auth_token_path``,
``ray_connect_timeout_s``, ``ray_local_cluster: {num_cpus, object_store_memory, start_timeout_s}``, and per
server ``ray: true | false | auto``. See ``docs/ray.md``.
"""

from gymfleet.ray_support._address import RayAddress, parse_ray_address
from gymfleet.ray_support._cluster import (
    LocalRayCluster,
    ray_mode,
    servers_needing_ray,
    start_cluster_for_fleet,
)
from gymfleet.ray_support._connect import (
    RaySettings,
    configure,
    connect,
    current_settings,
    import_ray,
    is_connected,
    settings_from_config,
    shutdown,
    translate_connect_error,
)
from gymfleet.ray_support._disconnect import CancelOnDisconnect
from gymfleet.ray_support._errors import (
    OffloadError,
    OffloadTimeoutError,
    RayAddressError,
    RayAuthError,
    RayClusterStartError,
    RayConnectError,
    RayVersionMismatchError,
    RemoteTaskError,
    WorkerLostError,
)
from gymfleet.ray_support._local_pool import LocalPool
from gymfleet.ray_support._offload import OffloadResult, run, run_traced, ship_module
from gymfleet.ray_support._offloader import Offloader, setup_server_process

__all__ = [
    "CancelOnDisconnect",
    "LocalPool",
    "LocalRayCluster",
    "OffloadError",
    "OffloadResult",
    "OffloadTimeoutError",
    "Offloader",
    "RayAddress",
    "RayAddressError",
    "RayAuthError",
    "RayClusterStartError",
    "RayConnectError",
    "RaySettings",
    "RayVersionMismatchError",
    "RemoteTaskError",
    "WorkerLostError",
    "configure",
    "connect",
    "current_settings",
    "import_ray",
    "is_connected",
    "parse_ray_address",
    "ray_mode",
    "run",
    "run_traced",
    "servers_needing_ray",
    "settings_from_config",
    "setup_server_process",
    "ship_module",
    "shutdown",
    "start_cluster_for_fleet",
    "translate_connect_error",
]
