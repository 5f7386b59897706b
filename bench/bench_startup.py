"""Startup time, idle memory and shutdown time of the example fleet (example_single_tool_call + simple_agent +
scripted model), median of N runs.

    python bench/bench_startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import EXAMPLE, SCRIPTED, children, fleet_process, median, print_table, rss_bytes, write_json


def one_run(tmp: Path) -> dict[str, float]:
    with fleet_process(["-c", EXAMPLE, "-c", SCRIPTED, "++head_server.port=0"], tmp) as info:
        startup = info["startup_s"]
        time.sleep(1.0)  # idle
        pids = [info["proc"].pid, *children(info["proc"].pid)]
        rss = sum(rss_bytes(p) for p in pids)
    return {"startup_s": startup, "idle_rss_mb": rss / 2**20, "processes": len(pids), "shutdown_s": info["shutdown_s"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):
            runs.append(one_run(Path(tmp)))
    summary = {key: median([r[key] for r in runs]) for key in runs[0]}
    print_table(f"startup / idle memory / shutdown (median of {args.runs})",
                [{"metric": k, "median": v, "runs": ", ".join(f"{r[k]:.2f}" for r in runs)}
                 for k, v in summary.items()])
    write_json("startup", {"runs": runs, "median": summary,
                           "targets": {"startup_s": 1.5, "idle_rss_mb": 400, "shutdown_s": 1.0}})


if __name__ == "__main__":
    main()
