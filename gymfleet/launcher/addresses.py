"""Which addresses are this machine's, and which address to tell peers a server is at.

A server bound to 127.0.0.1 and advertised to another host is unreachable from there; NeMo RL runs
hung on exactly that (servers defaulting to loopback, a hostname resolving to 127.0.1.1).
:func:`advertised_host` refuses that combination up front instead of failing at rollout time.

IPv6 addresses are returned bare (``fd00::2``); put brackets around them when building URLs.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
import socket
import subprocess
import threading
from pathlib import Path

from gymfleet.errors import AddressError

__all__ = [
    "advertised_host",
    "is_local_address",
    "is_loopback",
    "is_wildcard",
    "local_addresses",
    "route_source_address",
]

logger = logging.getLogger("gymfleet.launcher")

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "*"})
_IP_COMMAND_TIMEOUT_S = 3.0
_RESOLVE_TIMEOUT_S = 5.0


def local_addresses() -> set[str]:
    """Every IPv4 and IPv6 address assigned to this host's interfaces, plus the loopback names.

    Sources, first that works: ``ip -j addr``, then ``/proc/net/fib_trie`` + ``/proc/net/if_inet6``,
    then resolving this host's name. Link-local IPv6 addresses are listed without their zone.
    """
    found = _from_ip_command() or _from_proc() or _from_hostname()
    return found | {"127.0.0.1", "::1"} | set(_LOOPBACK_NAMES)


def is_wildcard(host: str) -> bool:
    """True for the "all addresses" hosts: ``""``, ``0.0.0.0``, ``::`` (and ``*``)."""
    return _bare(host) in _WILDCARDS


def is_loopback(host: str) -> bool:
    """True when ``host`` is, or resolves only to, loopback addresses (127.0.0.0/8, ::1).

    Raises:
        AddressError: A name that does not resolve.
    """
    bare = _bare(host)
    if bare.lower() in _LOOPBACK_NAMES:
        return True
    if is_wildcard(bare):
        return False
    return all(_ip_is_loopback(address) for address in _resolve(bare))


def is_local_address(host: str) -> bool:
    """True when ``host`` names this machine: a wildcard, loopback, or an address of an interface.

    Raises:
        AddressError: A name that does not resolve.
    """
    bare = _bare(host)
    if is_wildcard(bare) or bare.lower() in _LOOPBACK_NAMES:
        return True
    resolved = _resolve(bare)
    if any(_ip_is_loopback(address) for address in resolved):
        return True
    mine = {_normalise(address) for address in local_addresses()}
    return any(_normalise(address) in mine for address in resolved)


def route_source_address(dest_host: str, dest_port: int = 80) -> str:
    """The local address the kernel would use as source to reach ``dest_host``.

    Uses ``connect`` on a UDP socket, which picks a route but sends no packet.

    Raises:
        AddressError: ``dest_host`` does not resolve or there is no route to it.
    """
    bare = _bare(dest_host)
    if is_wildcard(bare):  # connecting to "any" reaches this host
        return "::1" if ":" in bare else "127.0.0.1"
    errors: list[str] = []
    for family, address in _resolve_with_family(bare):
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((address, dest_port))
            except OSError as exc:
                errors.append(f"{address}: {exc.strerror or exc}")
                continue
            return str(probe.getsockname()[0]).split("%", 1)[0]
    raise AddressError(
        f"No route from this machine to {dest_host!r} ({'; '.join(errors)}). "
        "Check the address and this host's network configuration (`ip route`)."
    )


def advertised_host(bind_host: str, *, peer_host: str) -> str:
    """The address to tell peers for a server bound at ``bind_host``.

    A wildcard bind (0.0.0.0 or ::) is advertised as the source address of this host's route to
    ``peer_host``; any other bind host is advertised as is.

    Args:
        bind_host: The host the server listens on.
        peer_host: A host that will connect to the server (the head server, say).

    Returns:
        The host to advertise, without brackets.

    Raises:
        AddressError: The result is a loopback address but the peer is not on loopback, so the peer
            could not reach it; or ``peer_host`` cannot be resolved or routed to.
    """
    bind = _bare(bind_host)
    peer = _bare(peer_host)
    if is_wildcard(bind):
        family = socket.AF_INET if bind in ("", "0.0.0.0", "*") else None
        result = _route_source_in_family(peer, family)
    else:
        result = bind
    if is_loopback(result) and not (is_wildcard(peer) or is_loopback(peer)):
        raise AddressError(
            f"Refusing to advertise {result!r} to peers at {peer!r}: {result!r} is a loopback address, "
            f"unreachable from {peer!r}. Bind a routable address of this host (or 0.0.0.0 to listen on all "
            "of them and advertise the one routed to the peer), or set `host` to an address the peer can "
            "reach."
        )
    return result


# ------------------------------------------------------------------------------------ internals
def _bare(host: str) -> str:
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def _normalise(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return address.lower()


def _ip_is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _route_source_in_family(peer: str, family: socket.AddressFamily | None) -> str:
    if family is None or is_wildcard(peer):
        return route_source_address(peer)
    candidates = [address for fam, address in _resolve_with_family(peer) if fam == family]
    if not candidates:
        raise AddressError(
            f"The server listens on IPv4 only (0.0.0.0) but peer {peer!r} has no IPv4 address. "
            "Bind '::' to listen on IPv6 too, or give the peer's IPv4 address."
        )
    return route_source_address(candidates[0])


def _resolve(host: str) -> list[str]:
    return [address for _family, address in _resolve_with_family(host)]


def _resolve_with_family(host: str) -> list[tuple[socket.AddressFamily, str]]:
    """getaddrinfo with a deadline: a hanging DNS server must not hang the launcher."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    else:
        return [(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, host)]
    found: list[tuple[socket.AddressFamily, str]] = []
    failures: list[OSError] = []
    finished = threading.Event()

    def lookup() -> None:
        try:
            for family, _type, _proto, _canon, sockaddr in socket.getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            ):
                pair = (family, str(sockaddr[0]))
                if pair not in found:
                    found.append(pair)
        except OSError as exc:
            failures.append(exc)
        finally:
            finished.set()

    worker = threading.Thread(target=lookup, name="gymfleet-resolve", daemon=True)
    worker.start()
    if not finished.wait(_RESOLVE_TIMEOUT_S):
        raise AddressError(
            f"Resolving host {host!r} took longer than {_RESOLVE_TIMEOUT_S:.0f} s. "
            "Check DNS (/etc/resolv.conf) or use an IP address."
        )
    if failures or not found:
        reason = (failures[0].strerror or str(failures[0])) if failures else "no addresses"
        raise AddressError(
            f"Host {host!r} does not resolve ({reason}). "
            "Check the spelling, DNS or /etc/hosts, or use an IP address."
        )
    return list(found)


def _from_ip_command() -> set[str]:
    ip = shutil.which("ip")
    if ip is None:
        return set()
    try:
        done = subprocess.run(
            [ip, "-j", "addr"], capture_output=True, timeout=_IP_COMMAND_TIMEOUT_S, check=True
        )
        interfaces = json.loads(done.stdout or b"[]")
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        logger.debug("`ip -j addr` unusable (%s); reading /proc instead", exc)
        return set()
    found: set[str] = set()
    for interface in interfaces if isinstance(interfaces, list) else []:
        for info in interface.get("addr_info", []) if isinstance(interface, dict) else []:
            local = info.get("local") if isinstance(info, dict) else None
            if isinstance(local, str) and local:
                found.add(_normalise(local))
    return found


def _from_proc() -> set[str]:
    found: set[str] = set()
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    previous = ""
    for line in lines:
        stripped = line.strip()
        # "|-- 10.0.0.5" followed by "/32 host LOCAL" marks an address of this host.
        if stripped.startswith("/32 host LOCAL") and previous.startswith("|-- "):
            found.add(previous[4:].strip())
        previous = stripped
    try:
        inet6 = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        inet6 = []
    for line in inet6:
        fields = line.split()
        if fields and len(fields[0]) == 32:
            try:
                found.add(str(ipaddress.IPv6Address(int(fields[0], 16))))
            except ValueError:
                continue
    return found


def _from_hostname() -> set[str]:
    found: set[str] = set()
    try:
        for family, address in _resolve_with_family(socket.gethostname()):
            if family in (socket.AF_INET, socket.AF_INET6):
                found.add(_normalise(address))
    except AddressError:
        pass
    return found
