"""A trainer process for the training tests: ``python -m tests.training.trainer_driver SCENARIO JSON``.

It joins the test's Ray cluster as a driver (as a trainer would), brings the fleet up with
``gymfleet.training.start_fleet`` and prints ``PIDS <json>`` once the fleet is up and one ``RESULT <json>``
line at the end. A separate process because a process joins one cluster once and Ray's threads and
handlers do not belong in pytest's process.

Scenarios: ``batch`` (one actor; a grouped batch; shutdown), ``failures`` (every 2nd model call fails),
``workers`` (the model server on a worker
actor; a batch; shutdown), ``abandon`` (fleet up, then the trainer exits without shutdown).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import httpx
import yaml

from gymfleet import ray_support, training, transport
from gymfleet.config import load_config
from gymfleet.ray_support._connect import connect_sync

ARITHMETIC = "resources_servers/arithmetic/configs/arithmetic.yaml"
SCRIPTED = "responses_api_models/scripted_model/configs/scripted_model.yaml"
TOKENS = "++policy_model.responses_api_models.scripted_model.return_token_id_information=true"
AGENT = "arithmetic_simple_agent"
PROMPTS = [
    {"responses_create_params": {"input": [{"role": "user", "content": q}]}, "task": t, "expected_answer": a}
    for q, t, a in (
        ("Repeat the word 'cat'.", "repeat", "cat"),
        ("What is 2 + 3?", "add", "5"),
        ("What is the first letter of the word 'dog'?", "first_letter", "d"),
    )
]


def emit(tag: str, data: Any) -> None:
    sys.stdout.write(f"{tag} {json.dumps(data)}\n")
    sys.stdout.flush()


async def batch(handle: training.FleetHandle) -> dict[str, Any]:
    seen = []
    async for r in handle.rollouts(PROMPTS, agent=AGENT, group_size=4, policy_version=7):
        seen.append(
            {
                "key": [r.task_index, r.rollout_index],
                "group_id": r.group_id,
                "policy_version": r.policy_version,
                "ok": r.ok,
                "reward": r.reward,
                "failure_class": r.failure_class,
                "prompt_tokens": len(r.prompt_token_ids),
                "gen_tokens": len(r.generation_token_ids),
                "logprobs": len(r.generation_log_probs),
                "row_policy_version": r.row.get("policy_version"),
            }
        )
    groups = await handle.grouped(PROMPTS, agent=AGENT, group_size=2, policy_version="v8")
    await transport.close_sessions()
    return {
        "rollouts": seen,
        "groups": [
            {
                "group_id": g.group_id,
                "keys": [[r.task_index, r.rollout_index] for r in g.rollouts],
                "mean": g.stats.mean,
                "advantages": g.advantages(),
                "policy_versions": [r.policy_version for r in g.rollouts],
            }
            for g in groups
        ],
    }


async def failures(handle: training.FleetHandle) -> dict[str, Any]:
    seen = [
        {"key": [r.task_index, r.rollout_index], "ok": r.ok, "reward": r.reward,
         "failure_class": r.failure_class, "message": r.failure_message}
        async for r in handle.rollouts(PROMPTS, agent=AGENT, group_size=4, policy_version=1, max_attempts=1)
    ]
    await transport.close_sessions()
    return {"rollouts": seen}


def fleet_ray_keys(head_url: str) -> dict[str, Any]:
    """The Ray keys of the config the fleet's servers received (from the head, as any server reads it)."""
    body = httpx.get(head_url + "/global_config_dict_yaml", timeout=10).json()
    config = yaml.safe_load(body)
    return {k: v for k, v in config.items() if k.startswith("ray_")}


def main(scenario: str, cfg: dict[str, Any]) -> None:
    try:
        training.start_fleet({})
        before_init = "no error"
    except training.TrainingFleetError as exc:
        before_init = f"TrainingFleetError: {exc}"
    ray_support.configure({k: v for k, v in cfg.items() if k.startswith("ray_")})
    connect_sync()
    if scenario == "failures":
        failing = "++policy_model.responses_api_models.scripted_model.fail_every_n=2"
        paths = f"+config_paths=[{ARITHMETIC},{SCRIPTED}]"
        head_cfg = load_config([paths, TOKENS, failing], load_env_yaml=False)
        workers = []
    elif scenario == "workers":
        head_cfg = load_config([f"+config_paths=[{ARITHMETIC}]"], load_env_yaml=False)
        workers = [load_config([f"+config_paths=[{SCRIPTED}]", TOKENS], load_env_yaml=False)]
    else:
        head_cfg = load_config([f"+config_paths=[{ARITHMETIC},{SCRIPTED}]", TOKENS], load_env_yaml=False)
        workers = []
    handle = training.start_fleet(
        head_cfg, worker_configs=workers, log_dir=cfg["log_dir"], startup_timeout_s=90, actor_num_cpus=0.5
    )
    emit("PIDS", {"pids": handle.pids(), "driver": os.getpid(), "servers": handle.servers})
    if scenario == "abandon":
        sys.stdout.flush()
        os._exit(0)  # the trainer dies without shutting the fleet down
    try:
        out = asyncio.run(failures(handle) if scenario == "failures" else batch(handle))
        out["head_url"] = handle.head_url
        out["fleet_ray"] = fleet_ray_keys(handle.head_url)
        out["before_init"] = before_init
        out["infos"] = handle.infos
    finally:
        handle.shutdown()
    emit("RESULT", out)


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
