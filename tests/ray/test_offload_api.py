"""gymfleet.ray_support on a real cluster: joining by GCS address or ray://, typed errors, cancellation."""

from __future__ import annotations

from typing import Any

import pytest

from gymfleet.ray_support import LocalRayCluster, RayAddressError, parse_ray_address
from tests.ray.helpers import drive, require_ray


def token_config(cluster: LocalRayCluster, address: str) -> dict[str, Any]:
    return {"ray_head_node_address": address, "ray_auth_token_path": str(cluster.token_path)}


@pytest.mark.parametrize("via", ["gcs", "client"])
def test_offload_api_on_a_real_cluster(ray_cluster: LocalRayCluster, via: str) -> None:
    address = ray_cluster.address if via == "gcs" else ray_cluster.client_address
    assert address is not None
    # The caller-cancellation path is the same code for both: run it once (a killed worker costs a restart).
    out = drive("api", {**token_config(ray_cluster, address), "with_cancel": via == "gcs"})
    assert out["double"] == 42 and out["trace"]["backend"] == "ray" and out["trace"]["node_id"]
    for pid, sid in out["where"]:
        assert pid != out["driver_pid"]
        assert sid == ray_cluster.pgid  # the work ran in a worker process of the test's cluster
    assert out["boom"]["type"] == "RemoteTaskError" and out["boom"]["remote_type"] == "ValueError"
    assert out["boom"]["has_traceback"]
    assert out["timeout"]["type"] == "OffloadTimeoutError" and out["timeout"]["timeout_s"] == 3.0
    assert 3.0 <= out["timeout"]["after_s"] < 6.0
    assert out["timeout"]["worker_killed"], "ray.cancel(force=True) must kill the looping worker"
    if via == "gcs":
        assert out["cancelled"] and out["cancel_killed_worker"]
    assert out["after"] == 4


def test_token_auth_is_required_and_the_error_says_how(ray_cluster: LocalRayCluster) -> None:
    assert ray_cluster.address is not None
    out = drive("connect_only", {"ray_head_node_address": ray_cluster.address, "timeout_s": 30})
    assert out["error"] == "RayAuthError"
    assert "ray_auth_token_path" in out["message"] and "ray get-auth-token" in out["message"]


def test_unreachable_cluster_fails_fast() -> None:
    out = drive("connect_only", {"ray_head_node_address": "127.0.0.1:1", "timeout_s": 30})
    assert (
        out["error"] == "RayConnectError"
        and "Could not reach the Ray cluster at 127.0.0.1:1" in out["message"]
    )


def test_version_mismatch_error_names_both_versions_and_the_fix() -> None:
    require_ray()
    out = drive("version_mismatch", {})
    assert out["error"] == "RayVersionMismatchError"
    assert "Ray 2.9.0 on Python 3.10.12" in out["message"] and out["ours"] in out["message"]
    assert "ray[default]==2.9.0" in out["message"]


@pytest.mark.parametrize(
    ("value", "kind", "host", "port"),
    [
        ("ray://10.0.0.5:10001", "client", "10.0.0.5", 10001),
        ("ray://head", "client", "head", 10001),
        ("10.0.0.5:6379", "gcs", "10.0.0.5", 6379),
        ("head", "gcs", "head", 6379),
        ("[::1]:7000", "gcs", "::1", 7000),
        ("ray://[fd00::1]:10001", "client", "fd00::1", 10001),
    ],
)
def test_address_forms(value: str, kind: str, host: str, port: int) -> None:
    address = parse_ray_address(value)
    assert (address.kind, address.host, address.port) == (kind, host, port)
    assert parse_ray_address(address.url) == address


@pytest.mark.parametrize("value", ["auto", "http://h:1", "h:x", "", "ray://", "h:70000"])
def test_bad_addresses(value: str) -> None:
    with pytest.raises(RayAddressError, match="ray_head_node_address"):
        parse_ray_address(value)
