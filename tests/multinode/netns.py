"""Hosts for tests: Linux network namespaces joined by a bridge, each "node" with its own IP.

Layout of one test run (names carry the prefix ``gf<pytest pid>-``, so parallel runs never meet)::

    gf123-br  (bridge namespace)        br0 --+-- v1 <==veth==> eth0  gf123-coord  10.213.0.1/24
                                              +-- v2 <==veth==> eth0  gf123-w1     10.213.0.2/24
                                              +-- v3 <==veth==> eth0  gf123-w2     10.213.0.3/24

Every link is created inside the test's own namespaces (nothing is added to the machine's own network stack),
and no namespace has a default route: a packet for an address outside ``SUBNET`` has no way out.

Safety rules, enforced here and not left to each test:

* :meth:`Topology.guard` refuses any destination that is not loopback or inside ``SUBNET``, and checks with
  ``ip route get`` inside the namespace that the route is the test's own link (``eth0``, no gateway).
* The test process itself never opens a socket to the subnet from the machine's namespace: HTTP goes
  through :class:`NetnsHttp`, a worker thread that has entered the node's namespace (``setns``; checked
  before each request) and calls the guard first. Commands run with ``ip netns exec`` in their own process
  groups.
* :meth:`Topology.close` kills every process in the namespaces and deletes them, also after a failure;
  :func:`clean_stale` removes what a crashed earlier run (a dead pid in the prefix) left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = [
    "GuardError",
    "NetnsHttp",
    "Node",
    "SUBNET",
    "Spawned",
    "Topology",
    "clean_stale",
    "netns_unavailable_reason",
]

SUBNET = ipaddress.ip_network("10.213.0.0/24")
IFACE = "eth0"
NETNS_DIR = Path("/run/netns")
_STALE_RE = re.compile(r"^gf(\d+)-")
_CLONE_NEWNET = 0x40000000
_IP_TIMEOUT_S = 10.0
# Variables that would send HTTP through a proxy outside the namespace.
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class GuardError(AssertionError):
    """A test tried to send to an address outside the test's own links."""


def _ip(*args: str, check: bool = True, timeout: float = _IP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    ip = shutil.which("ip") or "/usr/sbin/ip"
    done = subprocess.run([ip, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done


def netns_unavailable_reason() -> str | None:
    """None when this machine can run the suite; else why not (for ``pytest.skip``)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "multi-node tests need root (they create network namespaces with `ip netns add`)"
    if shutil.which("ip") is None:
        return "multi-node tests need the `ip` command (iproute2)"
    probe = f"gf{os.getpid()}-probe"
    try:
        _ip("netns", "add", probe)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns add` does not work here: {exc}"
    try:
        done = _ip("-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1", check=False)
        if done.returncode != 0:
            return f"veth pairs cannot be created inside a namespace: {done.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def iptables_unavailable_reason() -> str | None:
    if shutil.which("iptables") is None:
        return "iptables is not installed (apt-get install iptables); the partition test needs it"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_namespace_processes(ns: str) -> None:
    """SIGKILL whatever still runs inside namespace ``ns`` (only our own test processes can be there)."""
    for _ in range(3):
        done = _ip("netns", "pids", ns, check=False)
        pids = [int(p) for p in done.stdout.split() if p.isdigit() and int(p) != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def _delete_namespace(ns: str) -> None:
    _kill_namespace_processes(ns)
    _ip("netns", "del", ns, check=False)


def clean_stale() -> list[str]:
    """Delete namespaces named ``gf<pid>-...`` whose pid is dead (left by a crashed earlier run)."""
    done = _ip("netns", "list", check=False)
    removed = []
    for line in done.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _STALE_RE.match(name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            _delete_namespace(name)
            removed.append(name)
    return removed


@dataclass(frozen=True)
class Node:
    """One simulated machine: a namespace with one address on the test's bridge."""

    name: str  # logical name, e.g. "coord"
    ns: str  # namespace name, e.g. "gf123-coord"
    ip: str


@dataclass
class Spawned:
    """A process started inside a node's namespace, in its own process group; output goes to ``log_path``."""

    node: Node
    argv: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, grace_s: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal the process group, wait up to ``grace_s``, then SIGKILL it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


class NetnsHttp:
    """Synchronous HTTP from inside one namespace: every request runs on a thread that has entered it.

    ``setns`` moves only the calling thread, so the sockets this thread opens belong to the node's network
    stack; the thread checks its namespace before every request, and the topology's guard checks every
    destination.
    """

    def __init__(self, topology: Topology, node: Node) -> None:
        self.topology = topology
        self.node = node
        self._ns_path = NETNS_DIR / node.ns
        self._expected_inode = os.stat(self._ns_path).st_ino
        self._client: httpx.Client | None = None
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"netns-{node.name}", initializer=self._enter
        )

    def _enter(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(self._ns_path, os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({self._ns_path}) failed: {os.strerror(err)}")
        finally:
            os.close(fd)
        self._check_thread_namespace()
        self._client = httpx.Client(trust_env=False)  # no proxy from the environment, ever

    def _check_thread_namespace(self) -> None:
        inode = os.stat("/proc/thread-self/ns/net").st_ino
        if inode != self._expected_inode:
            raise GuardError(f"HTTP thread is not inside namespace {self.node.ns}; refusing to send")

    def _do(self, method: str, url: str, kwargs: dict[str, Any]) -> httpx.Response:
        self._check_thread_namespace()
        assert self._client is not None
        return self._client.request(method, url, **kwargs)

    def request(self, method: str, url: str, *, timeout: float = 10.0, **kwargs: Any) -> httpx.Response:
        self.topology.guard(self.node, url)
        kwargs.setdefault("timeout", timeout)
        return self._pool.submit(self._do, method, url, kwargs).result(timeout + 5.0)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        def shut() -> None:
            if self._client is not None:
                self._client.close()

        with contextlib.suppress(Exception):
            self._pool.submit(shut).result(5)
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class Topology:
    """A bridge namespace plus node namespaces; use as a context manager (teardown runs on any failure)."""

    log_dir: Path
    prefix: str = field(default_factory=lambda: f"gf{os.getpid()}-")
    subnet: ipaddress.IPv4Network = SUBNET
    nodes: dict[str, Node] = field(default_factory=dict)
    _bridge_ns: str | None = None
    _spawned: list[Spawned] = field(default_factory=list)
    _http: dict[str, NetnsHttp] = field(default_factory=dict)
    _routes_ok: set[tuple[str, str]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counter: int = 0

    # ------------------------------------------------------------------------------ building
    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_bridge(self) -> str:
        if self._bridge_ns is None:
            ns = f"{self.prefix}br"
            _ip("netns", "add", ns)
            self._bridge_ns = ns
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "add", "br0", "type", "bridge")
            _ip("-n", ns, "link", "set", "br0", "up")
        return self._bridge_ns

    def add_node(self, name: str) -> Node:
        """Create namespace ``<prefix><name>``: ``lo`` up, ``eth0`` on the bridge with the next address."""
        if name in self.nodes:
            raise ValueError(f"node {name!r} exists")
        bridge = self._ensure_bridge()
        index = len(self.nodes) + 1
        address = self.subnet.network_address + index
        ns = f"{self.prefix}{name}"
        if len(ns) > 40:
            raise ValueError(f"namespace name {ns!r} is too long")
        node = Node(name, ns, str(address))
        _ip("netns", "add", ns)
        self.nodes[name] = node  # registered before configuring, so close() deletes it on a failure below
        peer = f"v{index}"
        _ip("-n", ns, "link", "add", IFACE, "type", "veth", "peer", "name", peer, "netns", bridge)
        _ip("-n", bridge, "link", "set", peer, "master", "br0")
        _ip("-n", bridge, "link", "set", peer, "up")
        _ip("-n", ns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", IFACE)
        _ip("-n", ns, "link", "set", IFACE, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        self._check_isolated(node)
        return node

    def _check_isolated(self, node: Node) -> None:
        routes = json.loads(_ip("-n", node.ns, "-j", "route", "show", "table", "all").stdout or "[]")
        for route in routes:
            if route.get("dst") == "default" or route.get("gateway"):
                raise GuardError(f"namespace {node.ns} has a route with a gateway: {route}")
        links = json.loads(_ip("-n", node.ns, "-j", "link", "show").stdout or "[]")
        names = sorted(link.get("ifname") for link in links)
        if names != sorted(["lo", IFACE]):
            raise GuardError(f"namespace {node.ns} has unexpected interfaces {names}")

    # ------------------------------------------------------------------------------ guard
    def guard(self, node: Node, destination: str) -> None:
        """Refuse to send from ``node`` to anything but its loopback or an address routed on the test's link.

        Args:
            node: The sender.
            destination: A URL (``http://10.213.0.1:11000/...``) or a bare IP address. Names are refused
                (no DNS).

        Raises:
            GuardError: the destination is outside the subnet, not an IP literal, or not routed via ``eth0``.
        """
        host = urlsplit(destination).hostname if "://" in destination else destination
        try:
            address = ipaddress.ip_address((host or "").strip("[]"))
        except ValueError:
            raise GuardError(f"refusing to send to {destination!r}: not an IP literal") from None
        if address.is_loopback:
            return
        if address not in self.subnet or address in (
            self.subnet.network_address,
            self.subnet.broadcast_address,
        ):
            raise GuardError(
                f"refusing to send to {destination!r}: {address} is outside the test subnet {self.subnet}"
            )
        key = (node.ns, str(address))
        if key in self._routes_ok:
            return
        routes = json.loads(_ip("-n", node.ns, "-j", "route", "get", str(address)).stdout or "[]")
        route = routes[0] if routes else {}
        own = str(address) == node.ip and route.get("type") == "local" and route.get("dev") == "lo"
        if not own and (route.get("dev") != IFACE or route.get("gateway") or "via" in json.dumps(route)):
            raise GuardError(
                f"refusing to send to {address} from {node.ns}: route {route} is not the test link"
            )
        self._routes_ok.add(key)

    def guard_config_hosts(self, node: Node, config: Mapping[str, Any]) -> None:
        """Every ``host`` in a config a node will use must pass the guard (``0.0.0.0`` is the node's own)."""
        for host in _hosts_in(config):
            if host not in ("0.0.0.0", "::"):
                self.guard(node, host)

    # ------------------------------------------------------------------------------ processes
    def env(self, extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """The test's environment without proxy settings, plus ``extra`` (a None value removes it)."""
        env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
        env.update({"NO_PROXY": "*", "no_proxy": "*", "PYTHONUNBUFFERED": "1"})
        for key, value in (extra or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def spawn(
        self,
        node: Node,
        argv: Sequence[str],
        *,
        env: Mapping[str, str | None] | None = None,
        cwd: Path | None = None,
        label: str = "proc",
    ) -> Spawned:
        """Start ``argv`` inside ``node``'s namespace in a new session; stdout+stderr go to a log file."""
        with self._lock:
            self._counter += 1
            log_path = self.log_dir / f"{node.name}-{label}-{self._counter}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        full = [shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", node.ns, *argv]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                full,
                cwd=cwd,
                env=self.env(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        spawned = Spawned(node, list(argv), proc, log_path)
        self._spawned.append(spawned)
        return spawned

    def run(
        self,
        node: Node,
        argv: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str | None] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``node``'s namespace to completion within ``timeout``; then kill its group."""
        full = [shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", node.ns, *argv]
        proc = subprocess.Popen(
            full,
            cwd=cwd,
            env=self.env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate(timeout=5)
            raise AssertionError(
                f"{argv} timed out after {timeout}s in {node.ns}:\n{out[-3000:]}\n{err[-3000:]}"
            ) from None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def http(self, node: Node) -> NetnsHttp:
        if node.name not in self._http:
            self._http[node.name] = NetnsHttp(self, node)
        return self._http[node.name]

    # ------------------------------------------------------------------------------ faults
    def kill(self, node: Node, pid: int, sig: int = signal.SIGKILL) -> None:
        """Signal ``pid`` only if it runs inside ``node``'s namespace (never a process outside the test)."""
        try:
            inside = os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(NETNS_DIR / node.ns).st_ino
        except FileNotFoundError:
            return  # already gone
        if not inside:
            raise GuardError(f"refusing to signal pid {pid}: it does not run inside {node.ns}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _iptables(self, node: Node, action: str, peer: Node, port: int | None) -> None:
        out = ["OUTPUT", "-d", peer.ip, "-p", "tcp"] + (["--dport", str(port)] if port else [])
        inp = ["INPUT", "-s", peer.ip, "-p", "tcp"] + (["--sport", str(port)] if port else [])
        for rule in (out, inp):
            done = subprocess.run(
                ["ip", "netns", "exec", node.ns, "iptables", action, *rule, "-j", "DROP"],
                capture_output=True,
                text=True,
                timeout=_IP_TIMEOUT_S,
            )
            if done.returncode != 0 and action == "-A":
                raise RuntimeError(f"iptables {action} {rule} in {node.ns} failed: {done.stderr.strip()}")

    def drop(self, node: Node, peer: Node, *, port: int | None = None) -> None:
        """Silently drop TCP between ``node`` and ``peer`` (only ``peer``'s ``port`` when given)."""
        self._iptables(node, "-A", peer, port)

    def heal(self, node: Node, peer: Node, *, port: int | None = None) -> None:
        self._iptables(node, "-D", peer, port)

    # ------------------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Stop every process we started, kill leftovers in our namespaces, delete them. Idempotent."""
        for http in self._http.values():
            http.close()
        self._http.clear()
        for spawned in reversed(self._spawned):
            with contextlib.suppress(Exception):
                spawned.stop(grace_s=5.0)
        self._spawned.clear()
        for node in list(self.nodes.values()):
            _delete_namespace(node.ns)
        self.nodes.clear()
        if self._bridge_ns is not None:
            _delete_namespace(self._bridge_ns)
            self._bridge_ns = None


def _hosts_in(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if key == "host" and isinstance(inner, str):
                yield inner
            else:
                yield from _hosts_in(inner)
    elif isinstance(value, list):
        for item in value:
            yield from _hosts_in(item)
