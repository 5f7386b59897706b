"""Serve one server instance: the body of ``python app.py``.

1. Read the fleet config from the environment (``GYMFLEET_CONFIG_FILE`` from the launcher, or
   ``NEMO_GYM_CONFIG_DICT`` in a container) and pick this instance (``NEMO_GYM_CONFIG_PATH``, or the only server).
2. Get a listening socket: the one the launcher bound and passed down (``GYMFLEET_LISTEN_FD``: no port race), or bind
   ``host:port`` here (port 0 or absent: the OS picks).
3. Work out the URL peers can reach (a wildcard bind advertises the address that routes to the head; a loopback
   address is never advertised to a remote head).
4. Serve with uvicorn; register with the head once accepting; deregister before stopping.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from omegaconf import OmegaConf

from gymfleet import ray_support, transport
from gymfleet.auth import warn_if_exposed
from gymfleet.client import ServerClient, _head_url
from gymfleet.config import get_instance, load_child_config
from gymfleet.config import redact_secrets as _redact
from gymfleet.errors import GymFleetError
from gymfleet.fdlimit import raise_open_file_limit
from gymfleet.launcher.addresses import advertised_host
from gymfleet.launcher.lifeline import install_parent_watch, kill_own_process_group
from gymfleet.launcher.ports import LISTEN_BACKLOG, bind_socket, reuse_port_sibling
from gymfleet.launcher.uvicorn_server import PromptServer, http_protocol
from gymfleet.logs import configure_logging
from gymfleet.security import apply_process_settings, current_settings, fleet_scheme, settings_from_config
from gymfleet.server.registrar import Registrar
from gymfleet.server.workers import fork_workers
from gymfleet.tls import uvicorn_ssl_kwargs

if TYPE_CHECKING:
    from gymfleet.server.base import SimpleServer

__all__ = ["LISTEN_FD_ENV", "PARENT_PID_ENV", "build_server", "serve"]

logger = logging.getLogger("gymfleet.server")

LISTEN_FD_ENV = "GYMFLEET_LISTEN_FD"
PARENT_PID_ENV = "GYMFLEET_PARENT_PID"
INSTANCE_ID_ENV = "GYMFLEET_INSTANCE_ID"
ADVERTISE_HOST_ENV = "GYMFLEET_ADVERTISE_HOST"


def _plain_config(cfg: Any) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception:  # an interpolation only another process can resolve: keep it verbatim
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def build_server(server_cls: type[SimpleServer]) -> tuple[SimpleServer, dict[str, Any]]:
    """Construct the server of this process from the environment (no socket yet)."""
    cfg, name = load_child_config()
    instance = get_instance(cfg, name)
    global_config = _plain_config(cfg)
    # Before any client exists: token on fleet hops, TLS (https URLs, CA), secrets masked in logs.
    apply_process_settings(settings_from_config(global_config))
    client_settings = global_config.get("client") or {}
    server_client = ServerClient(
        global_config,
        late_binding_timeout_s=float(client_settings.get("late_binding_timeout_s", 60.0)),
        cache_ttl_s=float(client_settings.get("cache_ttl_s", 5.0)),
        quarantine_s=float(client_settings.get("quarantine_s", 30.0)),
    )
    server = server_cls(
        config={**instance.block, "name": name},
        server_client=server_client,
        global_config=global_config,
        instance_id=os.environ.get(INSTANCE_ID_ENV) or None,
    )
    return server, {"instance": instance, "config": global_config}


class _Server(PromptServer):
    """uvicorn server that deregisters from the head before it stops accepting requests.

    Signals are handled by :func:`_serve` (uvicorn's own capture would re-raise SIGTERM after shutdown and kill the
    process before it can take its process group down); a stop begins as soon as one arrives.
    """

    registrar: Registrar | None = None

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.registrar is not None:
            await self.registrar.stop()
        await super().shutdown(sockets=sockets)


def _listening_socket(host: str, port: int | None, workers: int) -> socket.socket:
    fd = os.environ.get(LISTEN_FD_ENV)
    if fd:
        sock = socket.socket(fileno=int(fd))
        sock.setblocking(False)
        return sock
    return bind_socket(host, int(port or 0), reuse_port=workers > 1)


def _worker_socket(sock: socket.socket, worker: int) -> socket.socket:
    """Worker 0 serves ``sock``; the others a socket of their own in its SO_REUSEPORT group, so each worker has its
    own accept queue. A socket bound without SO_REUSEPORT (an old launcher, a container runtime) stays shared."""
    if worker == 0 or not hasattr(socket, "SO_REUSEPORT"):
        return sock
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
        return sock
    try:
        own = reuse_port_sibling(sock)
    except (GymFleetError, OSError) as exc:
        logger.warning("worker %d shares the listening socket (no socket of its own: %s)", worker, exc)
        return sock
    sock.close()  # this process's copy only: worker 0 and the launcher keep theirs
    own.setblocking(False)
    return own


def serve(server_cls: type[SimpleServer]) -> None:
    """Run ``server_cls`` as this process's server until SIGINT/SIGTERM (or the launcher dies)."""
    server, ctx = build_server(server_cls)
    config: dict[str, Any] = ctx["config"]
    configure_logging(verbose=bool(config.get("verbose")))
    security = current_settings()  # applied by build_server
    if config.get("dry_run"):
        logger.info("dry run: '%s' constructed, not serving", server.config.name)
        return
    raise_open_file_limit()
    instance = ctx["instance"]
    bind_host = str(server.config.host or "127.0.0.1")
    warn_if_exposed(bind_host, security.token, what=f"server '{server.config.name}'")
    workers = int(server.config.num_workers or 1)
    sock = _listening_socket(bind_host, server.config.port, workers)
    port = sock.getsockname()[1]
    # What is imported and built by now lives as long as the process: the collector need not scan it again
    # (cheaper collections, pages stay shared with forked workers, and exit skips a full collection).
    gc.freeze()
    worker = fork_workers(workers - 1)  # before any thread exists
    sock = _worker_socket(sock, worker)
    parent = os.environ.get(PARENT_PID_ENV)
    if parent and worker == 0:
        install_parent_watch(int(parent), on_orphan=lambda: os.kill(os.getpid(), signal.SIGTERM))
    if worker:
        config = {**config, "register_with_head": False}  # the first process registers for all workers
    try:
        _run(_serve(server, sock, bind_host, port, instance, config))
    except GymFleetError as exc:
        logger.error("%s", exc)
        raise SystemExit(1) from None
    finally:
        if os.getpgrp() == os.getpid():
            kill_own_process_group()  # take our sidecars/sandboxes down with us


async def _serve(
    server: SimpleServer, sock: socket.socket, bind_host: str, port: int, instance: Any, config: dict[str, Any]
) -> None:
    # Ray (issue 6): remember the fleet's cluster (no `import ray`); a `ray: true` server joins it now.
    await ray_support.setup_server_process(config, instance.block, server_name=server.config.name)
    app = server.setup_webserver()
    uv_config = uvicorn.Config(
        app,
        log_config=None,
        access_log=bool(config.get("uvicorn_logging_show_200_ok", False)),
        timeout_keep_alive=30,  # longer than clients' 15 s pool keep-alive: no stale-socket races
        timeout_graceful_shutdown=float(config.get("graceful_shutdown_s", 5.0)),
        lifespan="on",
        loop="none",
        http=http_protocol(),
        backlog=LISTEN_BACKLOG,
        **uvicorn_ssl_kwargs(current_settings().tls),
    )
    uv_server = _Server(uv_config)
    head = config.get("head_server") or {}
    head_url = _head_url(head)
    registrar = None
    if head_url and config.get("register_with_head", True):
        # Raises AddressError when the address would be loopback while the head is remote (unreachable for peers).
        host = os.environ.get(ADVERTISE_HOST_ENV) or advertised_host(bind_host, peer_host=str(head["host"]))
        url_host = f"[{host}]" if ":" in host else host
        info = {
            "instance_id": server.instance_id,
            "name": server.config.name,
            "server_type": instance.server_type,
            "impl": instance.impl,
            "host": host,
            "port": port,
            "url": f"{fleet_scheme()}://{url_host}:{port}",
            "pid": os.getpid(),
            "node": socket.gethostname(),
            "entrypoint": instance.entrypoint,
            "dir_path": str(Path.cwd()),
            "start_time": time.time(),
            "block": _redact({k: v for k, v in instance.block.items() if k not in ("host", "port")},
                             extra_secret_values=current_settings().secret_values),
        }
        registrar = Registrar(
            head_url,
            info,
            connect_timeout_s=float(config.get("head_connect_timeout_s", 60.0)),
        )
        uv_server.registrar = registrar
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if uv_server.should_exit:
            uv_server.force_exit = True
        uv_server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    serve_task = asyncio.create_task(uv_server.serve(sockets=[sock]))
    while not uv_server.started and not serve_task.done():
        await asyncio.sleep(0.005)
    if registrar is not None and not serve_task.done():
        try:
            await registrar.start()
        except Exception:
            uv_server.should_exit = True
            await serve_task
            raise
    try:
        await serve_task
    finally:
        await transport.close_sessions()


def _run(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
