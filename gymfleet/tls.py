"""TLS for the whole fleet, switched on by one config block::

    tls:
      cert_file: /etc/gymfleet/server.pem   # this node's certificate (chain), PEM
      key_file: /etc/gymfleet/server.key    # its private key, PEM
      ca_file: /etc/gymfleet/ca.pem         # the CA that signed the fleet's certificates (clients verify with it)

With it every server and the head serve HTTPS on the socket they were handed, every fleet URL is advertised as
``https://``, and every client (server-to-server calls, registration and heartbeats, ``ng_status``, the collector)
verifies peers against ``ca_file`` in addition to the system's trusted roots.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gymfleet.errors import ConfigError

__all__ = ["TLSConfig", "client_ssl_context", "tls_from_config", "uvicorn_ssl_kwargs"]


@dataclass(frozen=True)
class TLSConfig:
    """Where the fleet's certificate, key and CA bundle are (all PEM files)."""

    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None

    @property
    def serves(self) -> bool:
        """True when this process can serve HTTPS (certificate and key given)."""
        return bool(self.cert_file and self.key_file)


def tls_from_config(config: Mapping[str, Any] | None) -> TLSConfig | None:
    """The ``tls:`` block of a fleet config, checked; None when TLS is off (no block, or an empty one).

    Raises:
        ConfigError: the block is not a mapping, has unknown keys, gives only one of cert/key, or names a file that
            does not exist.
    """
    block = (config or {}).get("tls")
    if block is None or block is False or block == {}:
        return None
    if not isinstance(block, Mapping):
        raise ConfigError(
            f"'tls' must be a mapping with cert_file, key_file and ca_file, got {block!r}. Example: "
            "'tls: {cert_file: server.pem, key_file: server.key, ca_file: ca.pem}'.",
            key="tls",
        )
    unknown = sorted(set(map(str, block)) - {"cert_file", "key_file", "ca_file"})
    if unknown:
        raise ConfigError(
            f"'tls' has unknown key(s) {', '.join(unknown)}; the keys are cert_file, key_file and ca_file.",
            key="tls",
        )
    values = {k: (str(block[k]) if block.get(k) else None) for k in ("cert_file", "key_file", "ca_file")}
    if bool(values["cert_file"]) != bool(values["key_file"]):
        raise ConfigError(
            "'tls' needs both cert_file and key_file to serve HTTPS (only one is set). Give both, or neither on a "
            "node that only runs clients (then ca_file alone is enough).",
            key="tls",
        )
    for key, value in values.items():
        if value and not Path(value).expanduser().is_file():
            raise ConfigError(f"tls.{key} is '{value}', which is not a file on this machine.", key=f"tls.{key}")
    if not any(values.values()):
        return None
    return TLSConfig(**values)


def uvicorn_ssl_kwargs(tls: TLSConfig | None) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` that make it serve HTTPS (empty when TLS is off)."""
    if tls is None or not tls.serves:
        return {}
    return {"ssl_certfile": str(Path(tls.cert_file or "").expanduser()),
            "ssl_keyfile": str(Path(tls.key_file or "").expanduser())}


def client_ssl_context(tls: TLSConfig | None) -> ssl.SSLContext | None:
    """A verifying client context trusting the system roots plus ``ca_file``; None when TLS is off."""
    if tls is None:
        return None
    context = ssl.create_default_context()
    if tls.ca_file:
        context.load_verify_locations(cafile=str(Path(tls.ca_file).expanduser()))
    return context
