"""Shared helpers of the benchmarks: start a fleet as a subprocess, read /proc, summarise, print, write JSON."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
EXAMPLE = "resources_servers/example_single_tool_call/configs/example_single_tool_call.yaml"
SCRIPTED = "responses_api_models/scripted_model/configs/scripted_model.yaml"
AGENT = "example_single_tool_call_simple_agent"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def machine() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return {"cpus": os.cpu_count(), "load1": round(load1, 2), "load5": round(load5, 2),
            "python": platform.python_version(), "commit": commit.stdout.strip() or None,
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def children(pid: int) -> list[int]:
    """All descendants of pid (Linux /proc)."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parent_of[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, frontier = [], [pid]
    while frontier:
        cur = frontier.pop()
        kids = [p for p, pp in parent_of.items() if pp == cur]
        out.extend(kids)
        frontier.extend(kids)
    return out


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except OSError:
        return 0


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError):
        return 0.0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


@contextlib.contextmanager
def fleet_process(args: Sequence[str], tmp: Path, timeout_s: float = 60.0) -> Iterator[dict[str, Any]]:
    """``gymfleet run`` in its own process group; yields the ready-file data plus timing; always stopped."""
    ready = tmp / f"ready-{time.monotonic_ns()}.json"
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gymfleet.cli.main", "run", *args, "--ready-file", str(ready), "--quiet",
         "--log-dir", str(tmp / "logs")],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "GYMFLEET_LOG_LEVEL": "WARNING"},
    )
    info: dict[str, Any] = {"proc": proc}
    try:
        deadline = time.monotonic() + timeout_s
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fleet did not start (rc={proc.poll()}); see {tmp / 'logs'}")
            time.sleep(0.005)
        info["startup_s"] = time.perf_counter() - start
        info.update(json.loads(ready.read_text()))
        yield info
    finally:
        t0 = time.perf_counter()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        info["shutdown_s"] = time.perf_counter() - t0
        for server in info.get("servers", {}).values():  # nothing may survive a benchmark
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.killpg(int(server["pid"]), signal.SIGKILL)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    sys.stdout.write(f"\n{title}\n")
    sys.stdout.write("  ".join(c.ljust(widths[c]) for c in cols) + "\n")
    sys.stdout.write("  ".join("-" * widths[c] for c in cols) + "\n")
    for r in rows:
        sys.stdout.write("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in cols) + "\n")
    sys.stdout.flush()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2, default=str))
    return path
