"""``ray_head_node_address``: a Ray Client address (``ray://host:10001``) or a GCS address (``host:6379``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from gymfleet.ray_support._errors import RayAddressError

__all__ = ["DEFAULT_CLIENT_PORT", "DEFAULT_GCS_PORT", "RayAddress", "parse_ray_address"]

DEFAULT_CLIENT_PORT = 10001
DEFAULT_GCS_PORT = 6379
_HINT = "Use 'ray://HOST:10001' (Ray Client) or 'HOST:6379' (the GCS address that `ray start --head` prints)."


@dataclass(frozen=True)
class RayAddress:
    """A parsed cluster address. ``kind`` is ``client`` (``ray://``) or ``gcs`` (direct driver connection)."""

    kind: Literal["client", "gcs"]
    host: str
    port: int

    @property
    def url(self) -> str:
        """The string ``ray.init(address=...)`` takes."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ray://{host}:{self.port}" if self.kind == "client" else f"{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return self.url


def parse_ray_address(value: object) -> RayAddress:
    """Parse ``ray_head_node_address``.

    Args:
        value: ``ray://host[:port]`` (port defaults to 10001) or ``host[:port]`` (port defaults to 6379);
            IPv6 hosts in brackets.

    Raises:
        RayAddressError: anything else (including ``auto``, which would pick whatever cluster this machine ran
            last).
    """
    if not isinstance(value, str) or not value.strip():
        raise RayAddressError(
            f"ray_head_node_address must be a non-empty string, got {value!r}. {_HINT}",
            key="ray_head_node_address",
        )
    text = value.strip()
    kind: Literal["client", "gcs"] = "gcs"
    default_port = DEFAULT_GCS_PORT
    if "://" in text:
        scheme, text = text.split("://", 1)
        if scheme != "ray":
            raise RayAddressError(
                f"ray_head_node_address {value!r} has scheme {scheme!r}. {_HINT}", key="ray_head_node_address"
            )
        kind, default_port = "client", DEFAULT_CLIENT_PORT
    text = text.rstrip("/")
    if text in ("auto", "local", ""):
        raise RayAddressError(
            f"ray_head_node_address {value!r} is not an address: gymfleet joins only the cluster you "
            f"name. {_HINT}",
            key="ray_head_node_address",
        )
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise RayAddressError(
                f"ray_head_node_address {value!r}: unclosed '['. {_HINT}", key="ray_head_node_address"
            )
        host, rest = text[1:end], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else rest
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        host = text  # bare IPv6 without a port
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise RayAddressError(
            f"ray_head_node_address {value!r}: port {port_text!r} is not a number. {_HINT}",
            key="ray_head_node_address",
        ) from None
    if not host or "/" in host or not 0 < port < 65536:
        raise RayAddressError(
            f"ray_head_node_address {value!r} is not HOST:PORT. {_HINT}", key="ray_head_node_address"
        )
    return RayAddress(kind, host, port)
