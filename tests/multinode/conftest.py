"""Multi-node fixtures: network namespaces as hosts (skipped where that is impossible)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.multinode.netns import Topology, clean_stale, netns_unavailable_reason

_reason: list[str | None] = []


def _unavailable() -> str | None:
    if not _reason:
        _reason.append(netns_unavailable_reason())
        if _reason[0] is None:
            clean_stale()  # namespaces a crashed earlier run left behind (its pid is dead)
    return _reason[0]


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Topology]:
    """A fresh bridge + namespaces for one test module; all of it is torn down after, also on failure."""
    reason = _unavailable()
    if reason is not None:
        pytest.skip(reason)
    name = Path(str(request.module.__file__)).stem.removeprefix("test_")[:6]
    tmp = tmp_path_factory.mktemp(f"mn-{name}")
    topo = Topology(tmp / "procs", prefix=f"gf{os.getpid()}-{name[:3]}-")
    request.addfinalizer(topo.close)
    yield topo
