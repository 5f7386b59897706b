"""The fleet launcher: one per node. Decides its role, binds ports, starts and supervises servers, stops them.

Roles (``mode``):

* ``head``: run the head (in this process) and this config's servers (single node, or the coordinator);
* ``worker``: a head runs elsewhere (or already here): start only this config's servers, which register with it;
* ``head-only``: only the head (the servers come from workers, containers, ``python app.py``);
* ``auto`` (default): ``head`` if ``head_server`` names an address of this machine and nothing answers there yet;
  otherwise ``worker``.

Ports never race: the launcher binds every listening socket itself (the configured port, or port 0 and reads the
real one back), writes the real ports into the config, and hands each server its socket as an inherited fd.
The config reaches children as a 0600 file (no argv/env size limit, no secrets in ``/proc/<pid>/environ``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import uvicorn
import yaml

from gymfleet import transport
from gymfleet.auth import warn_if_exposed
from gymfleet.config import (
    CONFIG_DICT_ENV,
    CONFIG_FILE_ENV,
    CONFIG_PATH_ENV,
    ServerInstance,
    find_server_dir,
    iter_instances,
)
from gymfleet.errors import (
    AddressError,
    ClientError,
    HeadUnreachableError,
    NoServerInstancesError,
    ServerStartupError,
)
from gymfleet.head.app import Head, build_head_app
from gymfleet.launcher.addresses import advertised_host, is_local_address
from gymfleet.launcher.endpoints import DEFAULT_READINESS_TIMEOUT_S, wait_for_model_endpoints
from gymfleet.launcher.logs import ProcessLog
from gymfleet.launcher.ports import LISTEN_BACKLOG, bind_socket
from gymfleet.launcher.process import ManagedProcess, ProcessState, RestartPolicy
from gymfleet.launcher.uvicorn_server import PromptServer, http_protocol
from gymfleet.launcher.zygote import Zygote, ZygoteError, default_zygote, resolve_spawn_method
from gymfleet.security import CHILD_ENV_SCRUB, current_settings, fleet_scheme, prepare_launcher_config
from gymfleet.tls import uvicorn_ssl_kwargs

__all__ = ["Fleet", "LaunchOptions", "Mode"]

logger = logging.getLogger("gymfleet.launcher")

Mode = Literal["auto", "head", "worker", "head-only"]
SERVER_TYPES = ("resources_servers", "responses_api_agents", "responses_api_models")


@dataclass
class LaunchOptions:
    mode: Mode = "auto"
    log_dir: str | Path | None = None
    quiet: bool = False  # do not echo server output on stderr (log files still get it)
    startup_timeout_s: float = 120.0
    stop_grace_s: float = 5.0
    restart: RestartPolicy | None = field(default_factory=RestartPolicy)
    python: str = sys.executable
    extra_env: dict[str, str] = field(default_factory=dict)
    ready_file: str | Path | None = None  # JSON {head_url, mode, servers: {name: {url, pid, ...}}} written when ready
    # "zygote" (fork servers from a pre-imported process) or "exec"; None: $GYMFLEET_SPAWN_METHOD, config
    # spawn_method, else zygote. See gymfleet.launcher.zygote.
    spawn_method: str | None = None


@dataclass
class _Server:
    instance: ServerInstance
    sock: socket.socket
    port: int
    url: str
    process: ManagedProcess | None = None
    exits: list[int] = field(default_factory=list)


class _EmbeddedUvicorn(PromptServer):
    """uvicorn inside the launcher's loop: the launcher owns SIGINT/SIGTERM, not uvicorn."""


def _block(config: dict[str, Any], inst: ServerInstance) -> dict[str, Any]:
    return config[inst.name][inst.server_type][inst.impl]


class Fleet:
    """One node's part of a fleet. ``async with Fleet(cfg) as fleet: ...`` or ``start()`` / ``stop()``."""

    def __init__(self, config: Any, options: LaunchOptions | None = None) -> None:
        from omegaconf import OmegaConf

        self.options = options or LaunchOptions()
        if hasattr(config, "_metadata"):
            self._dictconfig = config
            plain = OmegaConf.to_container(config, resolve=False)
        else:
            plain = copy.deepcopy(dict(config))
            self._dictconfig = OmegaConf.create(plain)
        self.config: dict[str, Any] = plain  # type: ignore[assignment]
        head = self.config.setdefault("head_server", {"host": "127.0.0.1", "port": 11000})
        self.head_host = str(head.get("host") or "127.0.0.1")
        self.head_port = int(head["port"]) if head.get("port") is not None else 11000
        self.mode: Mode = self.options.mode
        self.head: Head | None = None
        self.servers: dict[str, _Server] = {}
        self._head_server: _EmbeddedUvicorn | None = None
        self._head_task: asyncio.Task[None] | None = None
        self._run_dir: Path | None = None
        self.started_at: float | None = None
        self.ready_s: float | None = None
        self._spawner: Zygote | Literal["exec"] = "exec"
        self._own_zygote: Zygote | None = None
        self._ray_cluster: Any = None  # Ray (issue 6): a LocalRayCluster this launcher started, if any

    # ------------------------------------------------------------------------------ properties
    @property
    def head_url(self) -> str:
        host = "127.0.0.1" if self.head_host in ("0.0.0.0", "::") else self.head_host
        host = f"[{host}]" if ":" in host else host
        return f"{fleet_scheme()}://{host}:{self.head_port}"

    def url_of(self, name: str) -> str:
        return self.servers[name].url

    @property
    def log_dir(self) -> Path:
        if self.options.log_dir is not None:
            return Path(self.options.log_dir)
        configured = self.config.get("nemo_gym_log_dir") or self.config.get("log_dir")
        if configured:
            return Path(configured)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return Path.cwd() / ".gymfleet" / "logs" / f"{stamp}-{os.getpid()}"

    # ------------------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bring this node's part of the fleet up; return when every local server answers (or raise)."""
        self.started_at = time.monotonic()
        prepare_launcher_config(self.config)  # before any call: token, TLS, log masking; env secrets -> 0600 file
        instances = iter_instances(self._dictconfig)
        self.mode = await self._decide_mode()
        if self.mode != "head-only" and not instances:
            raise NoServerInstancesError(
                "This config defines no server instances. Pass config files with "
                '`ng_run "+config_paths=[a.yaml,b.yaml]"` (or `gymfleet run -c a.yaml`), or use --head-only.'
            )
        try:
            if self.mode != "head-only":
                self._choose_spawner()  # first: a zygote of our own imports while the head starts
                await self._start_ray_if_needed()
            if self.mode in ("head", "head-only"):
                head_sock = bind_socket(self.head_host, self.head_port)
                self.head_port = head_sock.getsockname()[1]
                self.config["head_server"]["port"] = self.head_port
            if self.mode != "head-only":
                self._check_advertised_addresses(instances)
                self._bind_servers(instances)
            self.config.setdefault("session_secret", secrets.token_hex(32))
            if self.mode == "head":
                await self._start_head_and_spawn(head_sock)
            elif self.mode == "head-only":
                await self._start_head(head_sock)
            else:
                await self._wait_for_remote_head()
                await self._spawn_servers()
            if self.mode != "head-only":
                await self._wait_ready()
                # "Ready" means the models' upstreams (vLLM, an API) answer too, not only our processes.
                await wait_for_model_endpoints(
                    self._dictconfig,
                    float(self.config.get("model_endpoint_readiness_timeout_seconds", DEFAULT_READINESS_TIMEOUT_S)),
                    names=set(self.servers),
                )
        except BaseException:
            await self.stop()
            raise
        self.ready_s = time.monotonic() - self.started_at
        if self.options.ready_file:
            self._write_ready_file(Path(self.options.ready_file))
        logger.info("All %d / %d servers ready! (%s mode, %.2fs)", len(self.servers), len(self.servers),
                    self.mode, self.ready_s)

    async def _decide_mode(self) -> Mode:
        if self.mode != "auto":
            return self.mode
        if not is_local_address(self.head_host):
            return "worker"
        if await self._head_answers(timeout_s=1.0):
            logger.info("a head already answers at %s; joining it as a worker", self.head_url)
            return "worker"
        return "head"

    async def _head_answers(self, timeout_s: float) -> bool:
        try:
            resp = await transport.send("GET", self.head_url + "/", timeout=transport.Timeouts(timeout_s, timeout_s),
                                        retry=transport.NO_RETRY, server_name="head_server")
            return resp.status < 500
        except ClientError:
            return False

    async def _wait_for_remote_head(self) -> None:
        timeout = float(self.config.get("head_connect_timeout_s", 60.0))
        deadline = time.monotonic() + timeout
        delay = 0.1
        while not await self._head_answers(timeout_s=3.0):
            if time.monotonic() + delay > deadline:
                raise HeadUnreachableError(
                    f"Could not connect to head server at {self.head_url} (tried for {timeout:.0f}s). Start the "
                    "coordinator first, check head_server.host / head_server.port and the firewall.",
                    server_name="head_server",
                    url=self.head_url,
                )
            await asyncio.sleep(delay)
            delay = min(2 * delay, 2.0)

    def _check_advertised_addresses(self, instances: list[ServerInstance]) -> None:
        """Fail before spawning if a server would be advertised at an address the head cannot reach."""
        for inst in instances:
            host = str(inst.host or self.config.get("default_host") or "127.0.0.1")
            try:
                advertised_host(host, peer_host=self.head_host)
            except AddressError as exc:
                raise AddressError(
                    f"server '{inst.name}' (host {host!r}) cannot be registered with the head at "
                    f"{self.head_url}: {exc}"
                ) from exc

    def _bind_servers(self, instances: list[ServerInstance]) -> None:
        for inst in instances:
            host = str(inst.host or self.config.get("default_host") or "127.0.0.1")
            workers = inst.block.get("num_workers") or 1
            # Several workers: one accept queue each (SO_REUSEPORT), so connection bursts queue instead of dropping.
            sock = bind_socket(host, int(inst.port or 0), reuse_port=int(workers) > 1)
            port = sock.getsockname()[1]
            block = _block(self.config, inst)
            block["host"], block["port"] = host, port
            url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            url_host = f"[{url_host}]" if ":" in url_host else url_host
            self.servers[inst.name] = _Server(inst, sock, port, f"{fleet_scheme()}://{url_host}:{port}")

    async def _start_head(self, sock: socket.socket) -> None:
        self.head = Head(
            self.config,
            lease_s=float(self.config.get("registry_lease_s", 10.0)),
            evict_after_s=float(self.config.get("registry_evict_after_s", 60.0)),
        )
        app = build_head_app(self.head)
        server = _EmbeddedUvicorn(
            uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_keep_alive=30,
                           http=http_protocol(), timeout_graceful_shutdown=1.0, backlog=LISTEN_BACKLOG,
                           **uvicorn_ssl_kwargs(current_settings().tls))
        )
        warn_if_exposed(self.head_host, current_settings().token, what="the head server")
        self._head_server = server
        self._head_task = asyncio.create_task(server.serve(sockets=[sock]), name="gymfleet-head")
        deadline = time.monotonic() + 10.0
        while not server.started:
            if self._head_task.done():
                self._head_task.result()
                raise ServerStartupError("the head server exited during startup", server_name="head_server")
            if time.monotonic() > deadline:
                raise ServerStartupError("the head server did not start within 10s", server_name="head_server")
            await asyncio.sleep(0.005)
        logger.info("head server at %s", self.head_url)

    async def _start_head_and_spawn(self, head_sock: socket.socket) -> None:
        # Servers first: the head's socket already listens, so while they start up (imports, config, app) the head
        # starts too, and their registrations wait in its backlog rather than the servers waiting for the head.
        await self._spawn_servers()
        await self._start_head(head_sock)

    def _choose_spawner(self) -> None:
        if resolve_spawn_method(self.options.spawn_method, self.config.get("spawn_method")) == "exec":
            self._spawner = "exec"
            return
        running = default_zygote()  # `gymfleet run` forks one before its event loop starts
        if running is None:
            try:
                running = self._own_zygote = Zygote.start("auto")
            except ZygoteError as exc:
                logger.warning("servers start with exec: %s", exc)
        self._spawner = running or "exec"

    def _write_config_file(self) -> Path:
        self._run_dir = Path(tempfile.mkdtemp(prefix="gymfleet-run-"))  # 0700
        path = self._run_dir / "config.yaml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(self.config, fh, sort_keys=False)
        return path

    async def _spawn_servers(self) -> None:
        config_file = self._write_config_file()
        log_dir = self.log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        base_env = {k: v for k, v in os.environ.items() if k not in (CONFIG_DICT_ENV, *CHILD_ENV_SCRUB)}
        repo_root = str(Path(__file__).resolve().parents[2])
        for name, srv in self.servers.items():
            inst = srv.instance
            server_dir = find_server_dir(inst.server_type, inst.impl)
            env = {
                **base_env,
                **self.options.extra_env,
                CONFIG_FILE_ENV: str(config_file),
                CONFIG_PATH_ENV: name,
                "GYMFLEET_LISTEN_FD": str(srv.sock.fileno()),
                "GYMFLEET_PARENT_PID": str(os.getpid()),
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(server_dir), repo_root, base_env.get("PYTHONPATH", "")) if p
                ),
            }
            log = ProcessLog(name, log_dir=log_dir, quiet=self.options.quiet)

            def on_exit(proc: ManagedProcess, code: int, _srv: _Server = srv) -> None:
                _srv.exits.append(code)

            srv.process = ManagedProcess(
                name,
                [self.options.python, inst.entrypoint],
                cwd=server_dir,
                env=env,
                pass_fds=[srv.sock.fileno()],
                log=log,
                restart=self.options.restart,
                on_exit=on_exit,
                spawn=self._spawner,
            )
        await asyncio.gather(*(srv.process.start() for srv in self.servers.values() if srv.process))

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.options.startup_timeout_s
        pending = set(self.servers)
        delay = 0.01
        while pending:
            registered = await self._registered_with_remote_head()
            for name in list(pending):
                srv = self.servers[name]
                if srv.exits:
                    assert srv.process is not None
                    raise ServerStartupError(
                        f"server '{name}' exited during startup ({srv.process.exit_report()})",
                        server_name=name,
                        last_lines=srv.process.log.last_lines(20),
                    )
                if await self._is_ready(name, registered):
                    pending.discard(name)
            if not pending:
                return
            if time.monotonic() > deadline:
                name = sorted(pending)[0]
                proc = self.servers[name].process
                lines = proc.log.last_lines(20) if proc else []
                raise ServerStartupError(
                    f"server(s) {', '.join(sorted(pending))} did not become ready within "
                    f"{self.options.startup_timeout_s:.0f}s. Last log lines of '{name}':\n" + "\n".join(lines),
                    server_name=name,
                    last_lines=lines,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.02 if self.head is not None else 0.25)  # a local check costs nothing

    async def _registered_with_remote_head(self) -> set[tuple[str, int]] | None:
        """(name, pid) of the healthy instances a remote head lists; None when not a worker that registers."""
        if self.head is not None or not self.config.get("register_with_head", True):
            return None
        try:
            resp = await transport.send("GET", self.head_url + "/server_instances",
                                        timeout=transport.Timeouts(2.0, 5.0), retry=transport.NO_RETRY,
                                        server_name="head_server")
            listed = resp.json() if resp.status == 200 else []
        except (ClientError, ValueError):
            return set()
        return {(str(i.get("process_name")), int(i.get("pid") or 0)) for i in listed
                if isinstance(i, dict) and i.get("status") == "healthy"}

    async def _is_ready(self, name: str, registered: set[tuple[str, int]] | None = None) -> bool:
        if self.head is not None:
            return bool(self.head.registry.by_name(name)) and any(
                e.info.port == self.servers[name].port for e in self.head.registry.by_name(name)
            )
        if registered is not None:
            # A worker is ready when the remote head lists its servers: both are up and reach each other.
            process = self.servers[name].process
            return process is not None and (name, process.pid or 0) in registered
        try:
            resp = await transport.send("GET", self.servers[name].url + "/", timeout=transport.Timeouts(1.0, 2.0),
                                        retry=transport.NO_RETRY, server_name=name)
            return resp.status < 500
        except ClientError:
            return False

    async def wait(self) -> None:
        """Run until cancelled. Servers that crash are restarted by their supervisors meanwhile."""
        reported: set[str] = set()
        while True:
            for name, srv in self.servers.items():
                if srv.process and srv.process.state == ProcessState.FAILED and name not in reported:
                    reported.add(name)
                    logger.error("server '%s' is down for good (restart budget spent): %s", name,
                                 srv.process.error or srv.process.exit_report())
            await asyncio.sleep(1.0)

    async def _start_ray_if_needed(self) -> None:
        """Ray (issue 6): validate ray_head_node_address; with none, start a local cluster only if a server
        says `ray: true`. Its address (and token path) go into the config the servers and the head receive."""
        from gymfleet.ray_support import start_cluster_for_fleet

        log_dir = Path(self.options.log_dir) if self.options.log_dir is not None else None
        self._ray_cluster = await start_cluster_for_fleet(self.config, log_dir=log_dir)

    async def stop(self) -> None:
        """Stop every server (SIGTERM to each process group, then SIGKILL after the grace), then the head."""
        procs = [srv.process for srv in self.servers.values() if srv.process is not None]
        if procs:
            await asyncio.gather(*(p.stop(self.options.stop_grace_s) for p in procs), return_exceptions=True)
        if self._ray_cluster is not None:  # Ray (issue 6): only the cluster this launcher started
            cluster, self._ray_cluster = self._ray_cluster, None
            await cluster.stop()
        for srv in self.servers.values():
            with contextlib.suppress(OSError):
                srv.sock.close()
        if self._own_zygote is not None:
            zygote, self._own_zygote = self._own_zygote, None
            await asyncio.to_thread(zygote.close)
        if self._head_server is not None and self._head_task is not None:
            self._head_server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._head_task, 5.0)
            self._head_server = None
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None
        with contextlib.suppress(Exception):
            await transport.close_sessions()

    def _write_ready_file(self, path: Path) -> None:
        data = {
            "head_url": self.head_url,
            "mode": self.mode,
            "launcher_pid": os.getpid(),
            "ready_s": self.ready_s,
            "servers": {line["name"]: dict(line) for line in self.summary()},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(path)  # atomic: readers never see half a file

    def summary(self) -> list[Mapping[str, Any]]:
        return [
            {"name": name, "server_type": s.instance.server_type, "impl": s.instance.impl, "url": s.url,
             "pid": s.process.pid if s.process else None}
            for name, s in self.servers.items()
        ]
