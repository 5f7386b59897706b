"""The fleet as Ray actors inside a trainer's cluster: grouped batches with token data, clean shutdown.

Each test runs a trainer process (``tests/training/trainer_driver.py``) that joins a real loopback Ray
cluster started by the test session, as a trainer joins its own cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from gymfleet.ray_support import LocalRayCluster
from tests.fleet_helpers import REPO, pid_alive, stop_process_group, wait_until

PROMPTS, GROUP = 3, 4


def start_trainer(scenario: str, cluster: LocalRayCluster, tmp_path: Path) -> subprocess.Popen[str]:
    cfg = {
        "ray_head_node_address": cluster.address,
        "ray_auth_token_path": str(cluster.token_path),
        "log_dir": str(tmp_path / "logs"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.training.trainer_driver", scenario, json.dumps(cfg)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[str], timeout_s: float = 150.0) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            stop_process_group(proc)  # type: ignore[arg-type]
    tagged = {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1]) for line in out.splitlines()
              if line.startswith(("PIDS ", "RESULT "))}
    assert proc.returncode == 0 and "PIDS" in tagged, f"rc={proc.returncode}\n{out[-3000:]}\n{err[-4000:]}"
    return tagged


def check_batch(result: dict[str, Any]) -> None:
    rollouts = result["rollouts"]
    keys = Counter(tuple(r["key"]) for r in rollouts)
    assert keys == Counter({(t, i): 1 for t in range(PROMPTS) for i in range(GROUP)})  # each exactly once
    for r in rollouts:
        assert r["ok"] and r["failure_class"] is None and r["reward"] in (0.0, 1.0)
        assert r["policy_version"] == 7 and r["row_policy_version"] == 7
        assert r["group_id"].endswith(f"/{r['key'][0]}")
        assert r["prompt_tokens"] > 0 and r["gen_tokens"] > 0 and r["logprobs"] == r["gen_tokens"]
    assert len({r["group_id"] for r in rollouts}) == PROMPTS
    groups = result["groups"]
    assert [g["keys"] for g in groups] == [[[t, 0], [t, 1]] for t in range(PROMPTS)]
    for g in groups:
        assert g["policy_versions"] == ["v8", "v8"] and len(g["advantages"]) == 2
    assert groups[0]["mean"] == 1.0  # scripted echo of "Repeat the word 'cat'" answers it


def assert_all_gone(pids: list[int], timeout_s: float = 30.0) -> None:
    assert wait_until(lambda: not [p for p in pids if pid_alive(p)], timeout_s), (
        f"processes left behind: {[p for p in pids if pid_alive(p)]}"
    )


def test_grouped_batch_on_actor_fleet_then_nothing_left(
    trainer_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    tagged = finish(start_trainer("batch", trainer_cluster, tmp_path))
    result = tagged["RESULT"]
    check_batch(result)
    info = result["infos"][0]
    assert info["mode"] == "head" and {s["name"] for s in info["servers"]} == {
        "arithmetic", "arithmetic_simple_agent", "policy_model"}
    # one cluster: the servers were handed the trainer's own cluster, with its token
    assert result["fleet_ray"]["ray_head_node_address"] == trainer_cluster.address
    assert result["fleet_ray"]["ray_auth_token_path"]  # set (the head masks its value)
    assert result["before_init"].startswith("TrainingFleetError: gymfleet.training.start_fleet runs inside")
    pids = tagged["PIDS"]["pids"]
    # the fleet runs in an actor, not in the trainer
    assert len(pids) == 4 and tagged["PIDS"]["driver"] not in pids
    assert_all_gone(pids)


def test_model_server_on_a_worker_actor(trainer_cluster: LocalRayCluster, tmp_path: Path) -> None:
    tagged = finish(start_trainer("workers", trainer_cluster, tmp_path))
    result = tagged["RESULT"]
    check_batch(result)
    head, worker = result["infos"]
    assert head["mode"] == "head" and worker["mode"] == "worker"
    assert [s["name"] for s in worker["servers"]] == ["policy_model"]
    assert head["pid"] != worker["pid"]
    assert_all_gone(tagged["PIDS"]["pids"])


def test_failed_rollouts_are_typed_not_reward_zero(
    trainer_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    tagged = finish(start_trainer("failures", trainer_cluster, tmp_path))
    rollouts = tagged["RESULT"]["rollouts"]
    expected = Counter({(t, i): 1 for t in range(PROMPTS) for i in range(GROUP)})
    assert Counter(tuple(r["key"]) for r in rollouts) == expected  # failures too: each exactly once
    failed = [r for r in rollouts if not r["ok"]]
    assert failed and len(failed) < len(rollouts)
    for r in failed:
        assert r["reward"] is None and r["failure_class"] and r["message"]
    assert_all_gone(tagged["PIDS"]["pids"])


def test_fleet_dies_with_the_trainer(trainer_cluster: LocalRayCluster, tmp_path: Path) -> None:
    tagged = finish(start_trainer("abandon", trainer_cluster, tmp_path))
    assert "RESULT" not in tagged
    assert_all_gone(tagged["PIDS"]["pids"], timeout_s=60.0)
