"""Fixtures of the fault suite: the scenario recorder, and network namespaces for the multi-host scenarios."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.results import Scenario


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.when == "call":
        item.stash[_OUTCOME] = report
    return report


_OUTCOME = pytest.StashKey[pytest.TestReport]()


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[Callable[..., Scenario]]:
    """``sc = scenario(mode, name, expected)``; the test adds observations and checks, then ``sc.finish()``.

    A scenario the test never finished (it raised first) is still written, as failed, with the error.
    """
    made: list[Scenario] = []

    def make(mode: int, name: str, expected: str) -> Scenario:
        sc = Scenario(mode, name, expected)
        made.append(sc)
        return sc

    yield make
    report = request.node.stash.get(_OUTCOME, None)
    for sc in made:
        if not sc.finished:
            error = str(report.longrepr)[-1500:] if report is not None and report.failed else "not finished"
            sc.write(error=error)


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Network namespaces as hosts (the multi-node suite's helper); skipped where they cannot be created."""
    from tests.multinode.netns import Topology, clean_stale, netns_unavailable_reason

    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    clean_stale()
    name = Path(str(request.module.__file__)).stem.removeprefix("test_")[:6]
    topo = Topology(tmp_path_factory.mktemp(f"netns-{name}") / "procs", prefix=f"gf{os.getpid()}-f{name[-3:]}-")
    request.addfinalizer(topo.close)
    yield topo
