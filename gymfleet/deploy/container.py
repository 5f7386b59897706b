"""The entrypoint of the gymfleet image: one image runs the head or any server, chosen by config and env.

``python -m gymfleet.deploy.container [COMMAND]``:

* ``serve`` (the default): run the server named by ``$NEMO_GYM_CONFIG_PATH`` (or the only server) of the
  config in ``$GYMFLEET_CONFIG_FILE`` or ``$NEMO_GYM_CONFIG_DICT`` -- exactly the tutorial's ``docker run
  -e NEMO_GYM_CONFIG_DICT='...' image``. ``$GYMFLEET_BIND_HOST`` / ``$GYMFLEET_PORT`` (set by the
  generated templates) replace the block's ``host`` / ``port``. The entrypoint binds the port, records it
  for the health check, and runs ``python <entrypoint>`` in the server's directory with the socket
  inherited: by ``exec``, or as the child of a tiny init when the entrypoint is PID 1 (signals forwarded,
  orphans reaped).
* ``head``: the head server only (``gymfleet run --head-only``), bound to ``$GYMFLEET_BIND_HOST``
  (0.0.0.0).
* ``healthcheck``: ``GET /`` on the port this container serves; exit 0 when it answers 200.
* anything else: passed to the ``gymfleet`` CLI (``collect``, ``status``, ``config`` ...).

Secrets arrive as env vars or as files: ``$GYMFLEET_TOKEN_FILE`` and ``$GYMFLEET_SECRET_<NAME>_FILE`` are
read into ``$GYMFLEET_TOKEN`` / ``$GYMFLEET_SECRET_<NAME>`` (Compose and Docker secrets are files)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import ssl
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["healthcheck", "load_secret_files", "main", "prepare_server"]

logger = logging.getLogger("gymfleet.deploy")

STATE_DIR_ENV = "GYMFLEET_STATE_DIR"
DEFAULT_STATE_DIR = "/tmp/gymfleet"
_SECRET_FILE_VAR = re.compile(r"^(GYMFLEET_TOKEN|GYMFLEET_SECRET_[A-Z0-9_]+)_FILE$")
_ENV_REF = re.compile(r"\$\{oc\.env:(GYMFLEET_(?:SECRET_[A-Z0-9_]+|TOKEN))\}")
EXIT_USAGE = 2


def load_secret_files(environ: MutableMapping[str, str]) -> list[str]:
    """Read ``X_FILE`` secret files into ``X`` (unless ``X`` is already set); returns the names set.

    Raises:
        DeployError: a named secret file does not exist or cannot be read.
    """
    from gymfleet.deploy._plan import DeployError

    loaded = []
    for var, path in sorted(environ.items()):
        match = _SECRET_FILE_VAR.match(var)
        if not match or environ.get(match.group(1)):
            continue
        try:
            value = Path(path).read_text().rstrip("\r\n")
        except OSError as exc:
            raise DeployError(
                f"${var} points at '{path}', which cannot be read ({exc.strerror or exc}). Mount the secret "
                f"there (compose 'secrets:', a Kubernetes Secret volume) or set ${match.group(1)} instead."
            ) from exc
        environ[match.group(1)] = value
        loaded.append(match.group(1))
    return loaded


def _fill_foreign_secrets(text: str, environ: MutableMapping[str, str], required: Sequence[str]) -> None:
    """Every secret the config refers to must resolve; the ones this container does not need resolve to ''."""
    from gymfleet.deploy._plan import DeployError

    missing = [name for name in required if name not in environ]
    if missing:
        raise DeployError(
            f"This server needs the secret(s) {', '.join(missing)} but they are not set. Provide each as an "
            "env var or as a file named by <NAME>_FILE (the generated templates read them from a Secret)."
        )
    for name in set(_ENV_REF.findall(text)):
        environ.setdefault(
            name, ""
        )  # another server's secret: never resolved here, but must not fail the load


def _config_text(environ: MutableMapping[str, str]) -> str:
    from gymfleet.config import CONFIG_DICT_ENV, CONFIG_FILE_ENV

    path = environ.get(CONFIG_FILE_ENV, "").strip()
    if path:
        try:
            return Path(path).read_text()
        except OSError:
            return ""  # load_child_config names the missing file with the fix
    return environ.get(CONFIG_DICT_ENV, "")


def _state_dir(environ: MutableMapping[str, str]) -> Path:
    return Path(environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


def _write_private(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, directory / name)
    return directory / name


def _serves_tls(config: Any) -> bool:
    tls = config.get("tls") if isinstance(config, dict) else None
    return isinstance(tls, dict) and bool(tls.get("cert_file"))


def _record_port(environ: MutableMapping[str, str], port: int, https: bool) -> None:
    _write_private(_state_dir(environ), "endpoint", f"{'https' if https else 'http'} {port}\n")


def prepare_server(environ: MutableMapping[str, str]) -> tuple[list[str], Path, int]:
    """Everything ``serve`` does before exec: returns (argv, cwd, listening fd) and updates ``environ``.

    Raises:
        ConfigError (and subclasses): no config, an unknown instance, a missing server directory or secret.
        ServerError: the port cannot be bound.
    """
    import yaml
    from omegaconf import OmegaConf

    from gymfleet.config import (
        CONFIG_DICT_ENV,
        CONFIG_FILE_ENV,
        CONFIG_PATH_ENV,
        find_server_dir,
        get_instance,
        load_child_config,
    )
    from gymfleet.deploy._plan import BIND_HOST_ENV, PORT_ENV
    from gymfleet.launcher.ports import bind_socket

    load_secret_files(environ)
    required = [n for n in environ.get("GYMFLEET_REQUIRED_SECRETS", "").split(",") if n]
    _fill_foreign_secrets(_config_text(environ), environ, required)
    cfg, name = load_child_config(environ)
    inst = get_instance(cfg, name)
    plain: dict[str, Any] = OmegaConf.to_container(cfg, resolve=False)  # type: ignore[assignment]
    block = plain[inst.name][inst.server_type][inst.impl]
    if environ.get(BIND_HOST_ENV):
        block["host"] = environ[BIND_HOST_ENV]
    if environ.get(PORT_ENV):
        block["port"] = int(environ[PORT_ENV])
    sock = bind_socket(str(block.get("host") or "127.0.0.1"), int(block.get("port") or 0))
    port = sock.getsockname()[1]
    block["port"] = port
    config_file = _write_private(_state_dir(environ), "config.yaml", yaml.safe_dump(plain, sort_keys=False))
    _record_port(environ, port, _serves_tls(plain))
    server_dir = find_server_dir(inst.server_type, inst.impl)
    environ.pop(
        CONFIG_DICT_ENV, None
    )  # the file is the one source from here on (and keeps /proc/*/environ clean)
    environ[CONFIG_FILE_ENV] = str(config_file)
    environ[CONFIG_PATH_ENV] = name
    fd = sock.detach()  # the fd outlives this function (and the exec); the server owns it from here
    os.set_inheritable(fd, True)
    environ["GYMFLEET_LISTEN_FD"] = str(fd)
    roots = [str(server_dir), *(p for p in environ.get("GYMFLEET_EXTRA_ROOTS", "").split(os.pathsep) if p)]
    environ["PYTHONPATH"] = os.pathsep.join([*roots, *(p for p in [environ.get("PYTHONPATH", "")] if p)])
    logger.info("serving '%s' (%s/%s) on %s:%d", name, inst.server_type, inst.impl, block.get("host"), port)
    return [sys.executable, inst.entrypoint], server_dir, fd


def _head_argv(environ: MutableMapping[str, str], extra: Sequence[str]) -> list[str]:
    from gymfleet.config import CONFIG_DICT_ENV, CONFIG_FILE_ENV
    from gymfleet.deploy._plan import BIND_HOST_ENV, PORT_ENV

    load_secret_files(environ)
    text = _config_text(environ)
    _fill_foreign_secrets(text, environ, [])
    config_file = environ.get(CONFIG_FILE_ENV, "").strip()
    if not config_file:
        config_file = str(
            _write_private(_state_dir(environ), "config.yaml", environ.get(CONFIG_DICT_ENV, ""))
        )
    data = _parse(text)
    head = data.get("head_server") if isinstance(data.get("head_server"), dict) else {}
    port = environ.get(PORT_ENV, "").strip() or str(head.get("port") or 11000)
    _record_port(environ, int(port), _serves_tls(data))
    environ.pop(CONFIG_DICT_ENV, None)
    return [
        sys.executable,
        "-m",
        "gymfleet.cli.main",
        "run",
        "--head-only",
        "-c",
        config_file,
        f"++head_server.host={environ.get(BIND_HOST_ENV) or '0.0.0.0'}",
        f"++head_server.port={port}",
        *extra,
    ]


def _parse(text: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return {}  # the launcher reports the broken config with line and column
    return data if isinstance(data, dict) else {}


def healthcheck(environ: MutableMapping[str, str], timeout_s: float = 3.0) -> int:
    """``GET /`` on this container's server; 0 when it answers 200, 1 otherwise (Docker HEALTHCHECK)."""
    try:
        scheme, port = (_state_dir(environ) / "endpoint").read_text().split()
    except (OSError, ValueError):
        return 1  # not listening yet
    context = None
    if scheme == "https":
        # Liveness on loopback: the certificate names the service, not 127.0.0.1, and proves nothing here.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(
            f"{scheme}://127.0.0.1:{port}/", timeout=timeout_s, context=context
        ) as resp:
            return 0 if resp.status == 200 else 1
    except (OSError, urllib.error.URLError):
        return 1


def _run_as_init(argv: list[str], cwd: Path | None, fds: Sequence[int]) -> int:
    """PID 1 of a container: run ``argv`` as a child in its own session, forward signals, reap every zombie.

    The server must not be PID 1 itself: as a process-group leader with pgid 1 its "signal my group" at
    shutdown would be ``kill(-1)``, and PID 1 also inherits every orphan to reap.
    """
    import signal
    import subprocess

    child = subprocess.Popen(argv, cwd=cwd, pass_fds=tuple(fds), start_new_session=True)
    for fd in fds:
        os.close(fd)  # the child holds the listening socket now

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if pid == child.pid:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


def _exec(argv: list[str], cwd: Path | None = None, fds: Sequence[int] = ()) -> int:
    if os.getpid() == 1:
        return _run_as_init(argv, cwd, fds)
    if cwd is not None:
        os.chdir(cwd)
    os.execv(argv[0], argv)
    return 1  # not reached


def main(argv: Sequence[str] | None = None) -> int:
    """Run one container command (see the module docstring); only returns on failure or for healthcheck."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args else "serve"
    if command == "healthcheck":
        return healthcheck(os.environ)
    from gymfleet.errors import ConfigError, GymFleetError
    from gymfleet.logs import configure_logging

    configure_logging(verbose=bool(os.environ.get("GYMFLEET_VERBOSE")))
    try:
        if command == "serve":
            argv_exec, cwd, fd = prepare_server(os.environ)
            return _exec(argv_exec, cwd, [fd])
        if command == "head":
            return _exec(_head_argv(os.environ, args))
        return _exec([sys.executable, "-m", "gymfleet.cli.main", command, *args])
    except ConfigError as exc:
        logger.error("config error: %s", exc)
        return EXIT_USAGE
    except GymFleetError as exc:
        logger.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
