"""Collect rollouts (resuming) with a dispatch that sleeps a random few ms; killed by the crash tests.

Usage: collect_with_random_latency.py INPUT OUTPUT
Exit status: 0 all collected, 3 finished with failures or missing rows, 128+N stopped by signal N.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import sys
from typing import Any

from gymfleet.rollouts import CollectionConfig, RolloutCollector


async def dispatch(row: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(random.uniform(0.002, 0.03))
    return {"responses_create_params": row["responses_create_params"], "response": {}, "reward": 1.0}


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    config = CollectionConfig(
        agent_name="agent",
        input_jsonl_fpath=sys.argv[1],
        output_jsonl_fpath=sys.argv[2],
        num_repeats=2,
        num_samples_in_parallel=8,
        resume_from_cache=True,
        quiet=True,
        stop_grace_s=2.0,
        fsync_interval_ms=-1,
    )
    summary = asyncio.run(RolloutCollector(config, dispatch).run())
    if summary.stopped_reason and summary.stopped_reason.startswith("received SIG"):
        return 128 + int(getattr(signal, summary.stopped_reason.removeprefix("received ")))
    return 0 if summary.ok else 3


if __name__ == "__main__":
    sys.exit(main())
