"""Real Ray for the Ray tests: one loopback cluster per session, started and stopped by the tests themselves.

The cluster is ``ray start --head --port=0 --temp-dir=<pytest tmp>`` with token auth (what
:class:`gymfleet.ray_support.LocalRayCluster` runs), in its own session; it is stopped by killing that
session's process group, never with ``ray stop`` (which would kill every Ray process on the machine).

This folder has no ``__init__.py`` on purpose: with one, pytest's importlib mode would import it as the
top-level module ``ray`` and shadow the real Ray in the test process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from gymfleet.ray_support import LocalRayCluster
from tests.fleet_helpers import pid_alive
from tests.ray.helpers import free_port, require_ray


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRayCluster]:
    require_ray()
    tmp = tmp_path_factory.mktemp("ray")
    cluster = LocalRayCluster(
        temp_dir=tmp,
        num_cpus=2,
        client_server_port=free_port(),
        object_store_memory=200 * 2**20,
        log_path=tmp_path_factory.mktemp("raylog") / "head.log",
    )
    try:
        asyncio.run(cluster.start(timeout_s=150))
        yield cluster
    finally:
        pgid = cluster.pgid
        members = cluster.members()
        asyncio.run(cluster.stop())
        if pgid is not None:
            left = [pid for pid in members if pid_alive(pid)]
            assert not left, f"Ray processes of the test cluster survived its stop: {left}"
