"""Helpers of the Ray tests (kept out of conftest.py so test modules can import them)."""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import sys
from typing import Any

import pytest

from tests.fleet_helpers import REPO

RAY_ENVS_CONFIG = "tests/ray/configs/ray_envs.yaml"
PATHOLOGICAL = "+".join(f"1/(x+{i})" for i in range(1, 90))  # sympy's simplify() of this runs for minutes


def free_port() -> int:
    # Ray Client's port cannot be 0: take one the OS hands out and release it (a small race, tests only).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install 'gymfleet[ray]')")


def require_sympy() -> None:
    if importlib.util.find_spec("sympy") is None:
        pytest.skip("sympy is not installed (pip install -r resources_servers/math_verify/requirements.txt)")


def drive(scenario: str, config: dict[str, Any], timeout_s: float = 120.0) -> dict[str, Any]:
    """Run ``tests/ray/driver.py SCENARIO`` in its own process (session); return its RESULT line."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.ray.driver", scenario, json.dumps(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        start_new_session=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return json.loads(lines[-1].removeprefix("RESULT "))



def code_body(code: str, tests: list[str]) -> dict[str, Any]:
    return {
        "responses_create_params": {"input": "write it"},
        "response": {
            "output": [
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": f"```python\n{code}\n```"}],
                }
            ]
        },
        "unit_tests": tests,
    }


def session_of(pid: int) -> int | None:
    """The session id of ``pid`` (every process of a cluster we started shares the session of `ray start`)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def started_cluster_pgid(launcher_log: str) -> int | None:
    match = re.search(r"local Ray cluster up at \S+ in [\d.]+s \(pgid (\d+)\)", launcher_log)
    return int(match.group(1)) if match else None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
