"""A Ray cluster owned by gymfleet: ``ray start --head --block`` in its own session, stopped by us alone.

Used by the launcher when some server of the fleet declares ``ray: true`` and the config names no
``ray_head_node_address``: one cluster for all servers of that launcher, its address written into the
config the servers receive, stopped when the fleet stops. Never ``ray stop`` (it kills every Ray process of
the machine, other users' clusters included): the cluster is one process group, and that group is killed.

``ray start`` gets SIGTERM from the kernel when the launcher dies, even by SIGKILL (``PR_SET_PDEATHSIG``),
and Ray's reaper then takes the whole cluster down: a crashed launcher leaves no cluster behind.

The cluster listens on loopback only and uses token authentication; the token file lives in the cluster's
temp dir (0600) and reaches the servers as ``ray_auth_token_path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from gymfleet.ray_support._address import parse_ray_address
from gymfleet.ray_support._connect import LOOPBACK_ENV, import_ray
from gymfleet.ray_support._errors import RayClusterStartError

__all__ = ["LocalRayCluster", "servers_needing_ray", "start_cluster_for_fleet"]

logger = logging.getLogger("gymfleet.ray")

_SERVER_TYPES = ("resources_servers", "responses_api_agents", "responses_api_models")
# Ray puts unix sockets under <temp_dir>/session_<date>_<pid>/sockets/; AF_UNIX paths end at 107 bytes.
_MAX_TEMP_DIR_LEN = 40
_STARTED_LINE = "Ray runtime started"


def ray_mode(block: Mapping[str, Any]) -> str:
    """A server block's ``ray`` key: ``required`` (true), ``off`` (false) or ``auto`` (absent / "auto")."""
    value = block.get("ray", "auto")
    if isinstance(value, str):
        value = value.strip().lower()
    if value in (True, "true", "yes", "required", "1"):
        return "required"
    if value in (False, "false", "no", "off", "0", None):
        return "off"
    return "auto"


def servers_needing_ray(config: Mapping[str, Any]) -> list[str]:
    """Names of the server instances whose block says ``ray: true``."""
    names = []
    for name, value in config.items():
        if not isinstance(value, Mapping):
            continue
        for server_type in _SERVER_TYPES:
            impls = value.get(server_type)
            if isinstance(impls, Mapping):
                for block in impls.values():
                    if isinstance(block, Mapping) and ray_mode(block) == "required":
                        names.append(str(name))
    return names


class LocalRayCluster:
    """A Ray node started by and stopped by this object only: by default a single-node head on loopback.

    Args:
        temp_dir: Ray's ``--temp-dir`` (sessions, logs, sockets); at most 40 characters (unix socket paths).
            Default: a new ``/tmp/gfray-*`` directory, removed at :meth:`stop`.
        num_cpus: CPUs the node offers (default: Ray's count of this machine).
        object_store_memory: Bytes of the object store (default: Ray's).
        client_server_port: Also serve Ray Client (``ray://127.0.0.1:PORT``) on this port.
        token_auth: Require a token (written to ``<temp_dir>/auth_token``, mode 0600, unless ``token_path``
            names the file of an existing cluster's token).
        log_path: Where ``ray start`` writes its output (default ``<temp_dir>/ray-start.log``).
        ray_executable: The ``ray`` CLI (default: the one next to this Python).
        node_ip_address: Listen on this address instead of loopback (a head other machines can join; give it
            ``token_auth``).
        join_address: Start a worker node joining the head at this GCS address instead of a head.
        command_prefix: Prepended to the command (tests: ``["ip", "netns", "exec", NS]``).
        token_path: The token file to use (a worker joining a token-auth head needs the head's token).
    """

    def __init__(
        self,
        *,
        temp_dir: str | Path | None = None,
        num_cpus: int | None = None,
        object_store_memory: int | None = None,
        client_server_port: int | None = None,
        token_auth: bool = True,
        log_path: str | Path | None = None,
        ray_executable: str | None = None,
        extra_args: list[str] | None = None,
        env: Mapping[str, str] | None = None,
        node_ip_address: str | None = None,
        join_address: str | None = None,
        command_prefix: list[str] | None = None,
        token_path: str | Path | None = None,
    ) -> None:
        self._own_temp = temp_dir is None
        self.temp_dir = Path(temp_dir) if temp_dir is not None else Path(tempfile.mkdtemp(prefix="gfray-"))
        self.num_cpus = num_cpus
        self.object_store_memory = object_store_memory
        self.client_server_port = client_server_port
        self.token_auth = token_auth
        self.log_path = Path(log_path) if log_path is not None else self.temp_dir / "ray-start.log"
        self.ray_executable = ray_executable or _default_ray_executable()
        self.extra_args = list(extra_args or [])
        self._env = dict(env or {})
        self.node_ip_address = node_ip_address
        self.join_address = join_address
        self.command_prefix = list(command_prefix or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.address: str | None = None  # GCS address, "127.0.0.1:PORT"
        self.token_path: Path | None = Path(token_path) if token_path is not None else None

    @property
    def client_address(self) -> str | None:
        return f"ray://127.0.0.1:{self.client_server_port}" if self.client_server_port else None

    @property
    def pgid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def command(self) -> list[str]:
        # Every port OS-chosen (0), except Ray Client's, which Ray does not allow to be 0.
        if self.join_address:
            cmd = [self.ray_executable, "start", f"--address={self.join_address}", "--block"]
        else:
            cmd = [
                self.ray_executable,
                "start",
                "--head",
                "--block",
                "--port=0",
                "--include-dashboard=false",
                "--dashboard-port=0",
            ]
        cmd += [
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
            "--dashboard-agent-listen-port=0",
            "--dashboard-agent-grpc-port=0",
            "--metrics-export-port=0",
            "--runtime-env-agent-port=0",
            "--min-worker-port=0",
            "--max-worker-port=0",
        ]
        if self.node_ip_address:
            cmd.append(f"--node-ip-address={self.node_ip_address}")
        if self.num_cpus is not None:
            cmd.append(f"--num-cpus={self.num_cpus}")
        if self.object_store_memory is not None:
            cmd.append(f"--object-store-memory={self.object_store_memory}")
        if self.client_server_port and not self.join_address:
            cmd.append(f"--ray-client-server-port={self.client_server_port}")
        return self.command_prefix + cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        env = {**os.environ, **self._env, "RAY_USAGE_STATS_ENABLED": "0"}
        if self.node_ip_address is None and self.join_address is None:
            env[LOOPBACK_ENV] = "0"  # listen on loopback only
        else:
            env.pop(LOOPBACK_ENV, None)
        env.pop("RAY_ADDRESS", None)
        if self.token_path is not None:
            env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)})
            env.pop("RAY_AUTH_TOKEN", None)
        else:
            env["RAY_AUTH_MODE"] = "disabled"
        return env

    async def start(self, timeout_s: float = 120.0) -> str:
        """Start the head and wait until it accepts drivers; return its GCS address.

        Raises:
            RayClusterStartError: ``ray start`` exited, or did not finish within ``timeout_s`` (its log tail
                is in the message); the half-started cluster is stopped.
        """
        if len(str(self.temp_dir)) > _MAX_TEMP_DIR_LEN:
            raise RayClusterStartError(
                f"Ray temp dir {str(self.temp_dir)!r} is longer than {_MAX_TEMP_DIR_LEN} characters: Ray's "
                "unix socket paths below it would pass the 107-byte limit. Use a shorter directory (e.g. "
                "under /tmp)."
            )
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        if self.token_auth and self.token_path is None:
            self.token_path = self.temp_dir / "auth_token"
            fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logger.info("starting a local Ray cluster (temp dir %s, log %s)", self.temp_dir, self.log_path)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent_hook(),
            )
        started = time.monotonic()
        address_file = self.temp_dir / "ray_current_cluster"
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RayClusterStartError(
                        f"`ray start` exited with code {self.proc.returncode} during startup. Last lines "
                        f"of {self.log_path}:\n{self.log_tail()}"
                    )
                if _STARTED_LINE in self.log_tail(4000):
                    if self.join_address:
                        self.address = self.join_address
                        break
                    text = address_file.read_text().strip() if address_file.exists() else ""
                    if text:
                        self.address = text
                        break
                if time.monotonic() - started > timeout_s:
                    raise RayClusterStartError(
                        f"`ray start --head` did not finish within {timeout_s:.0f}s (a busy machine starts "
                        f"Ray slowly: raise ray_local_cluster.start_timeout_s). Last lines of "
                        f"{self.log_path}:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.2)
        except BaseException:
            await self.stop()
            raise
        logger.info(
            "local Ray cluster up at %s in %.1fs (pgid %d)",
            self.address,
            time.monotonic() - started,
            self.proc.pid,
        )
        return self.address

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def members(self) -> list[int]:
        from gymfleet.launcher.lifeline import process_group_members

        return process_group_members(self.pgid) if self.pgid is not None else []

    async def stop(self, grace_s: float = 3.0) -> None:
        """Stop this cluster: SIGTERM to its process group, SIGKILL what is left after ``grace_s``."""
        proc, pgid = self.proc, self.pgid
        if proc is not None and pgid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while (proc.poll() is None or self.members()) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            for _ in range(3):
                if not self.members():
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                await asyncio.sleep(0.1)
            with contextlib.suppress(Exception):
                proc.wait(5)
            self.proc = None
            logger.info("local Ray cluster %s stopped", self.address)
        if self._own_temp:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def _die_with_parent_hook() -> Any:
    """A preexec_fn giving ``ray start`` SIGTERM when we die (even by SIGKILL); Ray's reaper, which
    ``--block`` starts, then kills the rest of the cluster's process group. None without prctl."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return hook


def _default_ray_executable() -> str:
    candidate = Path(sys.executable).with_name("ray")
    if candidate.exists():
        return str(candidate)
    return shutil.which("ray") or "ray"


async def start_cluster_for_fleet(
    config: MutableMapping[str, Any], *, log_dir: Path | None = None
) -> LocalRayCluster | None:
    """The launcher's hook: start a local cluster only if a server needs Ray and none is configured.

    Validates ``ray_head_node_address`` when set (and then starts nothing). Otherwise, when some server says
    ``ray: true``, starts a :class:`LocalRayCluster` and writes ``ray_head_node_address`` and
    ``ray_auth_token_path`` into ``config`` (what the servers receive). Settings: ``ray_local_cluster:
    {num_cpus, object_store_memory, start_timeout_s}``.

    Raises:
        RayAddressError: ``ray_head_node_address`` is malformed.
        MissingExtraError: a server needs Ray and Ray is not installed.
        RayClusterStartError: the cluster did not start.
    """
    if config.get("ray_head_node_address"):
        parse_ray_address(config["ray_head_node_address"])
        return None
    needers = servers_needing_ray(config)
    if not needers:
        return None
    import_ray(f"server(s) {', '.join(needers)} (`ray: true`)")  # MissingExtraError with the pip command
    settings = config.get("ray_local_cluster") or {}
    cluster = LocalRayCluster(
        num_cpus=settings.get("num_cpus"),
        object_store_memory=settings.get("object_store_memory"),
        log_path=(log_dir / "ray-head.log") if log_dir is not None else None,
    )
    logger.info(
        "server(s) %s need Ray and no ray_head_node_address is set: starting a local cluster",
        ", ".join(needers),
    )
    config["ray_head_node_address"] = await cluster.start(float(settings.get("start_timeout_s") or 120.0))
    if cluster.token_path is not None:
        config["ray_auth_token_path"] = str(cluster.token_path)
    return cluster
