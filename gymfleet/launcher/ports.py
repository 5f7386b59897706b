"""Bind-and-hold listening sockets, and name whoever holds a port we could not get.

NeMo Gym picked a free port by binding, closing and handing the number to a child that bound it
again later: a race another process could win. Here the launcher binds once, keeps the socket open,
writes the real port into the server's config and passes the file descriptor to the child
(``pass_fds``). Nobody can take the port in between, and it stays ours across restarts.

A server with several worker processes gets one listening socket per worker (``SO_REUSEPORT``, see
:func:`reuse_port_sibling`): the kernel spreads new connections over the workers, and each worker has its own
accept queue (``net.core.somaxconn`` each, 4096 by default), so a burst of 10k connections from a collector queues
instead of being dropped. The port is still checked free without ``SO_REUSEPORT`` first, so a port another program
holds is refused as before.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from gymfleet.errors import AddressError, PortInUseError, ServerError

__all__ = ["LISTEN_BACKLOG", "bind_socket", "describe_port_holder", "reuse_port_sibling"]

logger = logging.getLogger("gymfleet.launcher")

_TCP_LISTEN = "0A"  # st column of /proc/net/tcp{,6} for a socket in LISTEN state
_MAX_HOLDERS_NAMED = 4
_MAX_CMDLINE_CHARS = 200
_SCAN_BUDGET_S = 2.0  # time allowed for walking /proc/<pid>/fd when naming a holder


# Listen backlog of every fleet socket (the kernel caps it at net.core.somaxconn). Servers must pass it to uvicorn
# too: serving a socket listens on it again with uvicorn's own backlog (2048 by default), which would shrink it.
LISTEN_BACKLOG = 65535


def bind_socket(host: str, port: int = 0, *, backlog: int = LISTEN_BACKLOG, reuse_port: bool = False) -> socket.socket:
    """Bind a TCP listening socket that a child process can inherit.

    The socket has ``SO_REUSEADDR`` (so a port in TIME_WAIT after a restart can be bound again) but,
    unless ``reuse_port``, not ``SO_REUSEPORT`` (so a second server can never silently share the port), is
    listening, and is marked inheritable. Read the real port back with ``sock.getsockname()[1]`` when ``port`` is 0.

    Args:
        host: Address or name to bind; ``""`` and ``"0.0.0.0"`` mean every IPv4 address, ``"::"``
            every IPv6 address. IPv6 literals may be given with or without brackets.
        port: Port to bind; 0 lets the operating system choose a free one.
        backlog: Listen backlog (the kernel caps it at net.core.somaxconn; bursts of thousands of connects
            from a collector must queue, not be dropped).
        reuse_port: Let :func:`reuse_port_sibling` add more sockets on the same port (one per worker process).
            The port is first bound without ``SO_REUSEPORT``, so one held by anybody else is still refused.

    Returns:
        The bound, listening socket. The caller owns it and must close it.

    Raises:
        PortInUseError: The port is taken; the message names the holder when it can be found.
        AddressError: The host does not resolve or is not an address of this machine.
        ServerError: Any other reason the operating system refused the bind.
    """
    bind_host = _strip_brackets(host) or "0.0.0.0"
    if reuse_port and hasattr(socket, "SO_REUSEPORT"):
        return _bind_reuse_port(bind_host, port, backlog)
    return _bind(bind_host, port, backlog, reuse_port=False)


def _bind_reuse_port(bind_host: str, port: int, backlog: int) -> socket.socket:
    # Probe without SO_REUSEPORT: fails (naming the holder) when anybody holds the port, reuse-port group or not.
    for _ in range(5):
        probe = _bind(bind_host, port, 0, reuse_port=False, listen=False)
        chosen = probe.getsockname()[1]
        probe.close()
        try:
            return _bind(bind_host, chosen, backlog, reuse_port=True)
        except PortInUseError:
            if port:  # somebody took the port in the instant between probe and bind
                raise
    raise ServerError(f"Could not bind a free port on {bind_host}: it was taken again on each of 5 attempts.")


def reuse_port_sibling(sock: socket.socket, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """Another listening socket on ``sock``'s address, in its ``SO_REUSEPORT`` group (for one more worker).

    Raises:
        ServerError: ``sock`` was not bound with ``reuse_port=True`` (or the system has no ``SO_REUSEPORT``).
    """
    if not hasattr(socket, "SO_REUSEPORT") or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
        raise ServerError("The listening socket was not bound with SO_REUSEPORT; workers must share it.")
    host, port = sock.getsockname()[:2]
    v6only = None
    if sock.family == socket.AF_INET6:
        v6only = bool(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
    return _bind(host, port, backlog, reuse_port=True, family=sock.family, v6only=v6only)


def _bind(bind_host: str, port: int, backlog: int, *, reuse_port: bool, listen: bool = True,
          family: socket.AddressFamily | None = None, v6only: bool | None = None) -> socket.socket:
    if family is None:
        family, sockaddr = _resolve_bind_address(bind_host, port)
    else:
        sockaddr = (bind_host, port, 0, 0) if family == socket.AF_INET6 else (bind_host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
            if v6only is not None:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
            elif bind_host == "::":
                # "::" means every address, IPv4 included, whatever the host's bindv6only default says.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(sockaddr)
        if listen:
            sock.listen(backlog)
        sock.set_inheritable(True)
    except OSError as exc:
        sock.close()
        raise _translate_bind_error(exc, bind_host, port) from exc
    logger.debug("bound %s:%d (fd %d)", bind_host, sock.getsockname()[1], sock.fileno())
    return sock


def describe_port_holder(port: int) -> str | None:
    """Say which process listens on a TCP port, best effort (Linux ``/proc`` only).

    Args:
        port: The TCP port.

    Returns:
        A description such as ``"pid 4242 (python -m app --port 8000)"``, a note that the holder is
        not visible to this user, or None when no listening socket on that port was found (or
        ``/proc`` is not available).
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    holders = _pids_holding_inodes(inodes)
    if not holders:
        return f"a process this user cannot inspect (run `ss -ltnp 'sport = :{port}'` as root to see it)"
    named = [f"pid {pid} ({_cmdline(pid)})" for pid in holders[:_MAX_HOLDERS_NAMED]]
    if len(holders) > _MAX_HOLDERS_NAMED:
        named.append(f"and {len(holders) - _MAX_HOLDERS_NAMED} more")
    return ", ".join(named)


# ------------------------------------------------------------------------------------ internals
def _strip_brackets(host: str) -> str:
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def _resolve_bind_address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise AddressError(
            f"Cannot bind to host {host!r}: the name does not resolve ({exc.strerror}). "
            "Use an IP address of this machine, 0.0.0.0 for all addresses, or fix the name in DNS/hosts."
        ) from exc
    family, _type, _proto, _canon, sockaddr = infos[0]
    return family, sockaddr


def _translate_bind_error(exc: OSError, host: str, port: int) -> Exception:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        holder = describe_port_holder(port)
        held_by = f"it is held by {holder}" if holder else "the process holding it could not be identified"
        return PortInUseError(
            f"Cannot listen on {where}: the port is already in use; {held_by}. "
            "Stop that process, choose another port, or leave the port out of the config so the "
            "operating system picks a free one.",
            host=host,
            port=port,
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return AddressError(
            f"Cannot listen on {where}: {host} is not an address of this machine. "
            "Bind one of this host's addresses (see `ip addr`), 0.0.0.0 for all of them, or 127.0.0.1 "
            "for local use only."
        )
    if exc.errno == errno.EACCES:
        return ServerError(
            f"Cannot listen on {where}: permission denied (ports below 1024 need privileges). "
            "Choose a port of 1024 or above, or leave the port out so the operating system picks one."
        )
    return ServerError(f"Cannot listen on {where}: {exc.strerror or exc}.")


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            local = fields[1]
            try:
                local_port = int(local.rsplit(":", 1)[1], 16)
            except (IndexError, ValueError):
                continue
            if local_port == port and fields[9] != "0":
                inodes.add(fields[9])
    return inodes


def _pids_holding_inodes(inodes: set[str]) -> list[int]:
    targets = {f"socket:[{inode}]" for inode in inodes}
    pids: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return pids
    deadline = time.monotonic() + _SCAN_BUDGET_S
    for entry in entries:
        if not entry.isdigit():
            continue
        if time.monotonic() > deadline:  # a huge host: name what we found rather than stall
            break
        fd_dir = f"/proc/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or another user's process
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") in targets:
                    pids.append(int(entry))
                    break
            except OSError:
                continue
    return sorted(pids)


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "command line unavailable"
    text = " ".join(raw.replace(b"\0", b" ").decode("utf-8", "replace").split())
    if not text:
        try:
            text = "[" + Path(f"/proc/{pid}/comm").read_text().strip() + "]"
        except OSError:
            text = "command line unavailable"
    if len(text) > _MAX_CMDLINE_CHARS:
        text = text[: _MAX_CMDLINE_CHARS - 3] + "..."
    return text
