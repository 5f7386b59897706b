"""Local addresses, loopback detection and the address advertised to peers."""

from __future__ import annotations

import pytest

from gymfleet.errors import AddressError
from gymfleet.launcher.addresses import (
    advertised_host,
    is_local_address,
    is_loopback,
    is_wildcard,
    local_addresses,
    route_source_address,
)


def test_local_addresses_include_loopback() -> None:
    found = local_addresses()
    assert {"127.0.0.1", "::1", "localhost"} <= found


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    assert is_local_address(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]", ""])
def test_wildcards_are_local_but_not_loopback(host: str) -> None:
    assert is_wildcard(host)
    assert is_local_address(host)
    assert not is_loopback(host)


def test_remote_address_is_neither() -> None:
    assert not is_loopback("198.51.100.7")
    if "198.51.100.7" not in local_addresses():
        assert not is_local_address("198.51.100.7")


def test_every_interface_address_is_local() -> None:
    for address in local_addresses():
        assert is_local_address(address), address


def test_unresolvable_name_raises() -> None:
    with pytest.raises(AddressError, match="does not resolve"):
        is_local_address("no-such-host.invalid")


def test_route_to_loopback() -> None:
    assert route_source_address("127.0.0.1") == "127.0.0.1"
    assert route_source_address("0.0.0.0") == "127.0.0.1"


def test_advertise_specific_bind_host_as_is() -> None:
    assert advertised_host("127.0.0.1", peer_host="127.0.0.1") == "127.0.0.1"
    assert advertised_host("[::1]", peer_host="::1") == "::1"


def test_advertise_wildcard_to_a_loopback_peer() -> None:
    assert advertised_host("0.0.0.0", peer_host="127.0.0.1") == "127.0.0.1"
    assert advertised_host("0.0.0.0", peer_host="0.0.0.0") == "127.0.0.1"


def test_refuses_loopback_for_a_remote_peer() -> None:
    with pytest.raises(AddressError) as caught:
        advertised_host("127.0.0.1", peer_host="198.51.100.7")
    message = str(caught.value)
    assert "127.0.0.1" in message and "198.51.100.7" in message and "0.0.0.0" in message


def test_refuses_a_name_that_resolves_to_loopback() -> None:
    with pytest.raises(AddressError, match="loopback"):
        advertised_host("localhost", peer_host="198.51.100.7")


def test_advertise_wildcard_to_a_remote_peer_uses_a_routable_local_address() -> None:
    # connect() on a UDP socket only consults the routing table; no packet leaves the host.
    try:
        result = advertised_host("0.0.0.0", peer_host="198.51.100.7")
    except AddressError as exc:
        if "No route" in str(exc):
            pytest.skip("no route to a non-local address on this host")
        raise
    assert not is_loopback(result)
    assert result in local_addresses()
