"""One private Docker daemon with the gymfleet image built, shared by the container tests of a session."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator

import pytest

from tests.e2e.engines import DockerEngine, build_image, docker_engine


@pytest.fixture(scope="session")
def docker_with_image() -> Iterator[DockerEngine]:
    started = time.monotonic()
    with docker_engine() as engine:
        timings = {"engine_s": time.monotonic() - started, **build_image(engine, sys.executable)}
        print("\nimage build timings:", json.dumps({k: round(v, 1) for k, v in timings.items()}))
        yield engine
