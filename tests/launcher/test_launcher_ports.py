"""bind_socket: OS-chosen ports, named holders, typed errors, and fds handed to children."""

from __future__ import annotations

import asyncio
import socket
import subprocess

import pytest

from gymfleet.errors import AddressError, PortInUseError, ServerError
from gymfleet.launcher.addresses import is_local_address
from gymfleet.launcher.ports import bind_socket, describe_port_holder, reuse_port_sibling
from gymfleet.launcher.process import ManagedProcess
from tests.launcher.launcher_helpers import Cleanup, child_argv, quiet_log, script_argv


def test_port_zero_gives_a_real_listening_inheritable_socket() -> None:
    with bind_socket("127.0.0.1") as sock:
        port = sock.getsockname()[1]
        assert port > 0
        assert sock.get_inheritable()
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass


def test_second_bind_names_the_holder_process() -> None:
    holder = subprocess.Popen(
        script_argv("hold_port.py"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        with pytest.raises(PortInUseError) as caught:
            bind_socket("127.0.0.1", port)
        message = str(caught.value)
        assert caught.value.port == port and caught.value.host == "127.0.0.1"
        assert f"127.0.0.1:{port}" in message
        assert f"pid {holder.pid}" in message and "hold_port.py" in message
        assert "choose another port" in message
        assert describe_port_holder(port) is not None
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.stdout.close()
        holder.wait(timeout=5)


def test_reuse_port_group_spreads_connections_over_its_sockets() -> None:
    with bind_socket("127.0.0.1", reuse_port=True) as first, reuse_port_sibling(first) as second:
        port = first.getsockname()[1]
        assert second.getsockname()[1] == port
        clients = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(64)]
        try:
            accepted = []
            for listener in (first, second):
                listener.setblocking(False)
                count = 0
                while True:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.close()
                    count += 1
                accepted.append(count)
            assert sum(accepted) == 64 and min(accepted) > 0, accepted  # each socket has its own queue
        finally:
            for c in clients:
                c.close()


def test_reuse_port_never_joins_a_port_somebody_else_holds() -> None:
    for stranger_reuses in (False, True):
        stranger = socket.socket()
        if stranger_reuses:  # even a holder that itself allows SO_REUSEPORT sharing
            stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        try:
            with pytest.raises(PortInUseError):
                bind_socket("127.0.0.1", stranger.getsockname()[1], reuse_port=True)
        finally:
            stranger.close()


def test_a_plain_socket_gets_no_siblings() -> None:
    with bind_socket("127.0.0.1") as sock, pytest.raises(ServerError, match="SO_REUSEPORT"):
        reuse_port_sibling(sock)


def test_holder_of_a_free_port_is_unknown() -> None:
    with bind_socket("127.0.0.1") as sock:
        port = sock.getsockname()[1]
    assert describe_port_holder(port) is None


def test_address_not_on_this_machine() -> None:
    address = "198.51.100.77"  # TEST-NET-2: documentation only, never assigned
    if is_local_address(address):
        pytest.skip(f"{address} is assigned here")
    with pytest.raises(AddressError, match="not an address of this machine"):
        bind_socket(address, 0)


def test_unresolvable_host() -> None:
    with pytest.raises(AddressError, match="does not resolve"):
        bind_socket("no-such-host.invalid")


def test_ipv6_loopback_with_brackets() -> None:
    try:
        sock = bind_socket("[::1]")
    except AddressError:
        pytest.skip("no IPv6 loopback here")
    with sock:
        assert sock.family == socket.AF_INET6
        with socket.create_connection(("::1", sock.getsockname()[1]), timeout=2):
            pass


async def test_child_serves_on_the_inherited_fd_and_keeps_the_port_across_restarts(
    cleanup: Cleanup,
) -> None:
    from gymfleet.launcher.process import RestartPolicy

    with bind_socket("127.0.0.1") as sock:
        port = sock.getsockname()[1]
        fd = sock.fileno()
        process = cleanup.process(
            ManagedProcess(
                "echo",
                child_argv("--echo-fd", str(fd)),
                pass_fds=[fd],
                log=quiet_log("echo"),
                restart=RestartPolicy(max_restarts=3, backoff_initial_s=0.05, backoff_max_s=0.1),
            )
        )
        await process.start()
        pids = []
        for word in (b"hello", b"again"):
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            writer.write(word)
            await writer.drain()
            reply = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            await writer.wait_closed()
            echoed, pid = reply.split()
            assert echoed == word
            pids.append(int(pid))
        assert pids[0] != pids[1], "the second connection is served by the restarted child"
        assert process.restarts >= 1
        await process.stop(2.0)
