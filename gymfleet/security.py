"""Process-wide security settings: the fleet token, TLS, and the secret values this process must never print.

Every gymfleet process (a server, the launcher with its head, ``gymfleet collect`` / ``ng_status``) builds one
:class:`SecuritySettings` from its config at start and calls :func:`apply_process_settings` once:

* gymfleet's own HTTP hops (every :func:`gymfleet.transport.send` call that names a fleet ``server_name``: the
  ServerClient, the registrar, status probes, the collector) then carry ``Authorization: Bearer <fleet token>``;
  calls to outside upstreams (an OpenAI endpoint, a vLLM engine) never do, so the token cannot leak to them;
* clients verify TLS peers against the fleet's CA (``tls.ca_file``) and fleet URLs use ``https://``;
* every ``gymfleet.*`` log record (and uvicorn's) has the known secret values masked.

A launcher also moves ``$GYMFLEET_TOKEN`` / ``$GYMFLEET_SESSION_SECRET`` into the config its children read from a 0600
file (:func:`prepare_launcher_config`), keeps them out of the children's environment (:data:`CHILD_ENV_SCRUB`) and
wipes them from its own ``/proc/<pid>/environ`` (:func:`scrub_own_environ`).

The token comes from ``$GYMFLEET_TOKEN`` (wins) or the config key ``fleet_token``. Secret values are the strings under
secret-looking keys (:func:`gymfleet.config.is_secret_key`), the env.yaml values recorded by the config loader under
``env_secret_values``, the token and the session secret.
"""

from __future__ import annotations

import ctypes
import logging
import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gymfleet.config._secrets import ENV_SECRETS_KEY, secret_values
from gymfleet.tls import TLSConfig, client_ssl_context, tls_from_config

__all__ = [
    "CHILD_ENV_SCRUB",
    "ENV_SECRETS_KEY",
    "SESSION_SECRET_ENV",
    "TOKEN_ENV",
    "TOKEN_KEY",
    "SecuritySettings",
    "apply_process_settings",
    "client_ssl",
    "current_settings",
    "fleet_scheme",
    "fleet_token",
    "prepare_launcher_config",
    "scrub_own_environ",
    "settings_from_config",
]

logger = logging.getLogger("gymfleet.security")

TOKEN_ENV = "GYMFLEET_TOKEN"
SESSION_SECRET_ENV = "GYMFLEET_SESSION_SECRET"
# Never handed to child processes in their environment (secrets travel in the 0600 config file instead).
CHILD_ENV_SCRUB: tuple[str, ...] = (TOKEN_ENV, SESSION_SECRET_ENV, "NEMO_GYM_CONFIG_DICT")
TOKEN_KEY = "fleet_token"
METRICS_REQUIRE_TOKEN_KEY = "metrics_require_token"


@dataclass(frozen=True)
class SecuritySettings:
    """What one process needs to talk to, and serve, an authenticated (and maybe TLS) fleet."""

    token: str | None = None
    tls: TLSConfig | None = None
    metrics_require_token: bool = True
    secret_values: tuple[str, ...] = ()

    @property
    def scheme(self) -> str:
        """``https`` when the fleet runs TLS, else ``http``."""
        return "https" if self.tls is not None else "http"

    def auth_headers(self) -> dict[str, str]:
        """The header that authenticates a fleet hop (empty without a token)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def __repr__(self) -> str:  # never print the token or the secrets
        return (
            f"SecuritySettings(token={'set' if self.token else None}, tls={self.tls!r}, "
            f"metrics_require_token={self.metrics_require_token}, secret_values=<{len(self.secret_values)}>)"
        )


def fleet_token(config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The fleet token: ``$GYMFLEET_TOKEN`` if set and non-empty, else the config's ``fleet_token``, else None."""
    env = os.environ if environ is None else environ
    value = (env.get(TOKEN_ENV) or "").strip()
    if value:
        return value
    configured = (config or {}).get(TOKEN_KEY)
    if configured is None or configured == "":
        return None
    return str(configured).strip() or None


def _plain(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "_metadata"):  # an OmegaConf DictConfig: resolve what can be resolved
        from omegaconf import OmegaConf

        try:
            return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
        except Exception:  # an interpolation only another process can resolve
            return OmegaConf.to_container(config, resolve=False)  # type: ignore[return-value]
    return dict(config)


def settings_from_config(config: Any = None, environ: Mapping[str, str] | None = None) -> SecuritySettings:
    """Build the settings of this process from its fleet config (plain mapping or DictConfig) and environment.

    Raises:
        ConfigError: a malformed ``tls`` block.
    """
    plain = _plain(config)
    token = fleet_token(plain, environ)
    env = os.environ if environ is None else environ
    values = set(secret_values(plain))
    recorded = plain.get(ENV_SECRETS_KEY)
    if isinstance(recorded, list | tuple):
        values.update(str(v) for v in recorded if isinstance(v, str))
    for extra in (token, env.get(SESSION_SECRET_ENV)):
        if extra:
            values.add(extra)
    require = plain.get(METRICS_REQUIRE_TOKEN_KEY, True)
    return SecuritySettings(
        token=token,
        tls=tls_from_config(plain),
        metrics_require_token=require not in (False, "false", "False", 0),
        secret_values=tuple(sorted(v for v in values if v)),
    )


_current = SecuritySettings()
_client_context: ssl.SSLContext | None = None


def apply_process_settings(settings: SecuritySettings) -> None:
    """Make ``settings`` this process's: fleet hops carry the token, TLS peers are verified, logs are masked.

    Idempotent; a later call replaces the earlier settings (a test that builds several fleets in one process).
    """
    global _current, _client_context
    from gymfleet import transport
    from gymfleet.log_masking import install_secret_masking

    _current = settings
    _client_context = client_ssl_context(settings.tls)
    transport.configure_fleet_defaults(headers=settings.auth_headers(), ssl=_client_context)
    install_secret_masking(settings.secret_values)


def current_settings() -> SecuritySettings:
    """The settings last applied in this process (no token, no TLS before any was applied)."""
    return _current


def fleet_scheme() -> str:
    """URL scheme of fleet-internal URLs in this process: ``https`` when TLS was applied, else ``http``."""
    return _current.scheme


def client_ssl() -> ssl.SSLContext | None:
    """The verifying client context of this process (None without TLS: the default verification applies)."""
    return _client_context


def prepare_launcher_config(config: dict[str, Any], environ: Mapping[str, str] | None = None) -> SecuritySettings:
    """For a launcher: move the token and session secret from its environment into ``config`` (which reaches the
    children as a 0600 file; :data:`CHILD_ENV_SCRUB` keeps them out of the children's environment), then build and
    apply this process's settings. Mutates ``config``."""
    env = os.environ if environ is None else environ
    token = (env.get(TOKEN_ENV) or "").strip()
    if token:
        config[TOKEN_KEY] = token
    session_secret = (env.get(SESSION_SECRET_ENV) or "").strip()
    if session_secret:
        config["session_secret"] = session_secret
    settings = settings_from_config(config, env)
    apply_process_settings(settings)
    return settings


def scrub_own_environ(names: Iterable[str] = (TOKEN_ENV, SESSION_SECRET_ENV)) -> list[str]:
    """Remove ``names`` from this process's environment, including the copy the kernel shows in
    ``/proc/<pid>/environ`` (the initial environment block, which ``os.environ`` changes never touch); returns the
    names found. Call it before forking anything (a zygote inherits the block as it is then).

    Linux only and best effort: the block's bytes are overwritten in place with ``X`` (as ``setproctitle`` does for the
    command line); where that is not possible only ``os.environ`` is cleaned.
    """
    found = [name for name in names if name in os.environ]
    for name in found:
        os.environ.pop(name, None)
    if not found:
        return found
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50 and 51 of proc(5))
        if not 0 < start < end or end - start > 16 * 1024 * 1024:
            return found
        block = ctypes.string_at(start, end - start)
        for name in found:
            prefix = name.encode() + b"="
            offset = 0
            while (at := block.find(prefix, offset)) != -1:
                stop = block.find(b"\0", at)
                stop = len(block) if stop == -1 else stop
                if at == 0 or block[at - 1] == 0:  # a whole "NAME=value" entry, not a value containing it
                    ctypes.memset(start + at, ord("X"), stop - at)
                offset = stop
    except (OSError, ValueError, IndexError) as exc:
        logger.debug("could not scrub the initial environment block: %s", exc)
    return found
