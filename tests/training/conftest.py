"""A real loopback Ray cluster for the training tests, started and stopped by them (never ``ray stop``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from gymfleet.ray_support import LocalRayCluster
from tests.fleet_helpers import pid_alive
from tests.ray.helpers import require_ray


@pytest.fixture(scope="session")
def trainer_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRayCluster]:
    require_ray()
    cluster = LocalRayCluster(  # temp dir: Ray's own short /tmp/gfray-* (unix socket path limit)
        num_cpus=4,
        object_store_memory=200 * 2**20,
        log_path=tmp_path_factory.mktemp("trainer-raylog") / "head.log",
    )
    try:
        asyncio.run(cluster.start(timeout_s=150))
        yield cluster
    finally:
        members = cluster.members()
        asyncio.run(cluster.stop())
        left = [pid for pid in members if pid_alive(pid)]
        assert not left, f"Ray processes of the test cluster survived its stop: {left}"
