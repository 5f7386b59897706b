"""The main job of the README: start the example fleet, collect rollouts over the example dataset, print the
reward summary, stop everything. Offline, no API key, no GPU."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from gymfleet.cli.collect import print_summary
from gymfleet.client import ServerClient
from gymfleet.config import load_config
from gymfleet.launcher import Fleet, LaunchOptions
from gymfleet.rollouts import CollectionConfig, CollectionSummary, RolloutCollector, make_aggregate, make_dispatch

__all__ = ["QUICKSTART_CONFIGS", "run_quickstart"]

QUICKSTART_CONFIGS = (
    "resources_servers/example_single_tool_call/configs/example_single_tool_call.yaml",
    "responses_api_models/scripted_model/configs/scripted_model.yaml",
)
AGENT = "example_single_tool_call_simple_agent"
DATASET = "resources_servers/example_single_tool_call/data/example.jsonl"


async def run_quickstart(
    *, num_repeats: int = 4, output: str | Path = ".gymfleet/quickstart/rollouts.jsonl", console: Console | None = None
) -> CollectionSummary:
    console = console or Console()
    cfg = load_config(["+config_paths=[" + ",".join(QUICKSTART_CONFIGS) + "]", "++head_server.port=0"],
                      load_env_yaml=False)
    console.print(f"[bold]Starting the example fleet[/] ({len(QUICKSTART_CONFIGS)} config files)...")
    async with Fleet(cfg, LaunchOptions(mode="head", quiet=True)) as fleet:
        console.print(f"Fleet ready in {fleet.ready_s:.2f}s; head at {fleet.head_url}")
        for line in fleet.summary():
            console.print(f"  {line['name']:<40} {line['server_type']}/{line['impl']:<24} {line['url']}")
        client = ServerClient(fleet.config)
        config = CollectionConfig.from_mapping({
            "agent_name": AGENT,
            "input_jsonl_fpath": DATASET,
            "output_jsonl_fpath": str(output),
            "num_repeats": num_repeats,
            "quiet": True,
        })
        summary = await RolloutCollector(config, make_dispatch(client), aggregate=make_aggregate(client)).run()
    print_summary(summary, console)
    console.print(f"Rollouts written to {output}. The fleet has stopped.")
    return summary
