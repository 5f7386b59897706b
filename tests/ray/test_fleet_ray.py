"""Fleets on Ray: joined via GCS address and via ray://, work landing on the cluster's workers, a hung
verify cut off while the others keep completing, and the launcher's own cluster (only when a server needs
it)."""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gymfleet.ray_support import LocalRayCluster
from tests.fakes.bodies import answer_body as math_body
from tests.fleet_helpers import RunningFleet, pid_alive, run_fleet_process, wait_until
from tests.ray.helpers import (
    PATHOLOGICAL,
    RAY_ENVS_CONFIG,
    code_body,
    percentile,
    require_ray,
    require_sympy,
    session_of,
    started_cluster_pgid,
)

CHECK_TIMEOUT_S = 6.0  # math_verify's check_timeout_s in RAY_ENVS_CONFIG


def fleet_args(address: str, token_path: Path | None) -> list[str]:
    args = ["-c", RAY_ENVS_CONFIG, "++head_server.port=0", f"++ray_head_node_address={address}"]
    return [*args, f"++ray_auth_token_path={token_path}"] if token_path else args


@pytest.fixture(autouse=True)
def _needs_sympy() -> None:
    require_sympy()  # math_verify's checker


@pytest.fixture(scope="module")
def gcs_fleet(
    ray_cluster: LocalRayCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningFleet]:
    assert ray_cluster.address is not None
    with run_fleet_process(
        tmp_path_factory.mktemp("gcs-fleet"), fleet_args(ray_cluster.address, ray_cluster.token_path)
    ) as fleet:
        yield fleet


def test_math_verify_runs_on_the_clusters_workers(
    gcs_fleet: RunningFleet, ray_cluster: LocalRayCluster
) -> None:
    url = gcs_fleet.url("math_verify") + "/verify"
    server_pid = gcs_fleet.ready["servers"]["math_verify"]["pid"]
    for answer, expected, reward in (
        ("\\boxed{\\frac{5}{6}}", "\\frac{10}{12}", 1.0),
        ("\\boxed{7}", "8", 0.0),
    ):
        resp = httpx.post(url, json=math_body(answer, expected), timeout=90)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        trace = body["verify_trace"]
        assert body["reward"] == reward and trace["backend"] == "ray" and trace["node_id"]
        assert trace["pid"] != server_pid
        assert session_of(trace["pid"]) == ray_cluster.pgid  # a worker process of the test's own cluster


def test_code_exec_sandbox_runs_inside_a_ray_task(
    gcs_fleet: RunningFleet, ray_cluster: LocalRayCluster
) -> None:
    url = gcs_fleet.url("code_exec") + "/verify"
    good = httpx.post(
        url, json=code_body("def add(a, b):\n    return a + b", ["assert add(2, 3) == 5"]), timeout=90
    ).json()
    assert good["reward"] == 1.0 and good["sandbox"]["status"] == "passed", good
    assert (
        good["verify_trace"]["backend"] == "ray"
        and session_of(good["verify_trace"]["pid"]) == ray_cluster.pgid
    )
    looping = httpx.post(url, json=code_body("while True:\n    pass", ["assert True"]), timeout=90).json()
    assert looping["reward"] == 0.0 and looping["sandbox"]["status"] == "timeout"
    offline = httpx.post(
        url,
        json=code_body(
            "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)", ["assert True"]
        ),
        timeout=90,
    ).json()
    assert offline["reward"] == 0.0 and offline["sandbox"]["status"] == "failed"


def test_hung_verify_is_a_typed_timeout_and_the_others_keep_completing(gcs_fleet: RunningFleet) -> None:
    url = gcs_fleet.url("math_verify") + "/verify"
    httpx.post(url, json=math_body("\\boxed{1}", "1"), timeout=90)  # warm: the workers exist
    latencies: list[float] = []

    def one(index: int) -> float:
        start = time.monotonic()
        resp = httpx.post(url, json=math_body(f"\\boxed{{{index}}}", str(index)), timeout=30)
        assert resp.status_code == 200 and resp.json()["reward"] == 1.0, (resp.text, gcs_fleet.log()[-3000:])
        return time.monotonic() - start

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        started = time.monotonic()
        hung = pool.submit(httpx.post, url, json=math_body(f"\\boxed{{{PATHOLOGICAL}}}", "1"), timeout=60)
        while not hung.done() and time.monotonic() - started < 30:
            latencies += list(pool.map(one, range(3)))
        resp = hung.result()
    assert resp.status_code == 504, resp.text
    error = resp.json()["error"]
    assert (
        error["type"] == "offload_timeout"
        and error["backend"] == "ray"
        and error["timeout_s"] == CHECK_TIMEOUT_S
    )
    hung_s = time.monotonic() - started
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(
        f"\n[ray] hung verify cut after {hung_s:.2f}s; {len(latencies)} other verifies meanwhile: "
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
    )
    assert len(latencies) >= 6
    assert p99 < CHECK_TIMEOUT_S, latencies  # none waited for the stuck check


def test_fleet_joins_through_ray_client(ray_cluster: LocalRayCluster, tmp_path: Path) -> None:
    assert ray_cluster.client_address is not None
    with run_fleet_process(tmp_path, fleet_args(ray_cluster.client_address, ray_cluster.token_path)) as fleet:
        resp = httpx.post(
            fleet.url("math_verify") + "/verify", json=math_body("\\boxed{2^{10}}", "1024"), timeout=90
        )
        assert resp.status_code == 200, resp.text
        trace = resp.json()["verify_trace"]
        assert resp.json()["reward"] == 1.0 and trace["backend"] == "ray"
        assert session_of(trace["pid"]) == ray_cluster.pgid


def test_no_ray_user_no_cluster(tmp_path: Path) -> None:
    with run_fleet_process(tmp_path, ["-c", RAY_ENVS_CONFIG, "++head_server.port=0"]) as fleet:
        resp = httpx.post(fleet.url("math_verify") + "/verify", json=math_body("\\boxed{3}", "3"), timeout=60)
        assert resp.json()["verify_trace"]["backend"] == "local"
        code = httpx.post(
            fleet.url("code_exec") + "/verify", json=code_body("x = 1", ["assert x == 1"]), timeout=60
        )
        assert code.json()["verify_trace"] == {"backend": "local"}
        assert "Ray cluster" not in fleet.log()


def test_launcher_starts_and_stops_a_cluster_when_a_server_needs_ray(tmp_path: Path) -> None:
    require_ray()
    args = [
        "-c",
        RAY_ENVS_CONFIG,
        "++head_server.port=0",
        "++math_verify.resources_servers.math_verify.ray=true",
        "++ray_local_cluster.num_cpus=1",
    ]
    with run_fleet_process(tmp_path, args, timeout_s=180) as fleet:
        pgid = started_cluster_pgid(fleet.log())
        assert pgid is not None, fleet.log()[-2000:]
        members = [pid for pid in os.listdir("/proc") if pid.isdigit() and session_of(int(pid)) == pgid]
        assert len(members) >= 3  # gcs_server, raylet, ... of the launcher's cluster
        resp = httpx.post(
            fleet.url("math_verify") + "/verify", json=math_body("\\boxed{x+x}", "2x"), timeout=90
        )
        trace = resp.json()["verify_trace"]
        assert resp.json()["reward"] == 1.0 and trace["backend"] == "ray" and session_of(trace["pid"]) == pgid
        config = httpx.get(fleet.head_url + "/global_config_dict_yaml", timeout=10).json()
        assert "ray_head_node_address: 127.0.0.1:" in config  # shared with every server through the config
        # code_exec (ray: auto) uses the same cluster: the address reached it too
        code = httpx.post(
            fleet.url("code_exec") + "/verify", json=code_body("y = 2", ["assert y == 2"]), timeout=90
        )
        assert session_of(code.json()["verify_trace"]["pid"]) == pgid
        fleet.proc.terminate()
        assert fleet.proc.wait(30) == 0
        assert wait_until(lambda: not any(pid_alive(int(p)) for p in members), 15), (
            "the fleet's cluster survived"
        )


def test_ray_true_without_ray_installed_names_the_install_command(tmp_path: Path) -> None:
    fake = tmp_path / "no_ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('simulated: Ray is not installed')\n")
    args = [
        "-c",
        RAY_ENVS_CONFIG,
        "++head_server.port=0",
        "++math_verify.resources_servers.math_verify.ray=true",
    ]
    env = {"PYTHONPATH": f"{fake.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with run_fleet_process(tmp_path, args, env=env, wait_ready=False) as fleet:
        assert fleet.proc.wait(60) == 1
        assert "pip install 'gymfleet[ray]'" in fleet.log() and "math_verify" in fleet.log()


def test_malformed_address_fails_at_startup(tmp_path: Path) -> None:
    args = ["-c", RAY_ENVS_CONFIG, "++head_server.port=0", "++ray_head_node_address=http://somewhere:6379"]
    with run_fleet_process(tmp_path, args, wait_ready=False) as fleet:
        assert fleet.proc.wait(60) == 2  # a config error
        assert "ray_head_node_address" in fleet.log() and "ray://HOST:10001" in fleet.log()
