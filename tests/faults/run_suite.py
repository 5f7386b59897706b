"""Run the fault suite and print its table: scenario, expected, observed, pass (also written to docs/fault-suite.md).

    python -m tests.faults.run_suite                # the CI part (a few minutes on 2 cores)
    python -m tests.faults.run_suite --slow         # also the long scenarios (10k rollouts, 6-20 s keep-alive pauses)
    python -m tests.faults.run_suite --no-docs -k 07  # a subset, without rewriting the doc
    python -m tests.faults.run_suite --merge slow.jsonl  # the CI part, plus records of an earlier --slow run

The table is built from the JSON lines the scenarios record (``$GYMFLEET_FAULT_RESULTS``, a fresh file per run).
Multi-host scenarios need root (network namespaces, iptables); elsewhere they are skipped and listed as not run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.faults.results import RESULTS_ENV, read_results

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "fault-suite.md"
MODES = {
    1: "Head or registry restart",
    2: "Worker crash mid-rollout",
    3: "Dead or blackholed upstream",
    4: "Slow or hung /verify",
    5: "10k+ concurrent rollouts",
    6: "Silently dropped connection",
    7: "Keep-alive race",
    8: "Port contention",
    9: "Walltime kill + resume",
    10: "Infrastructure failure as reward 0",
    11: "Rate-limited upstream",
    12: "Loopback advertised to remote nodes",
    13: "Unauthenticated access, credential leakage",
    14: "Unclean shutdown leaves orphans",
    15: "'Ready' that isn't",
}
_SUITE_TIMEOUT_S = 3600


def _observed(values: dict[str, Any], limit: int = 260) -> str:
    parts = []
    for key, value in values.items():
        if value is None or value == [] or value == {}:
            continue
        text = f"{key}={value}"
        parts.append(text if len(text) <= 90 else text[:87] + "...")
    joined = "; ".join(parts)
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def build_table(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One line per recorded scenario (last record wins), and a 'not run' line for a mode nobody recorded."""
    latest: dict[tuple[int, str], dict[str, Any]] = {}
    for row in rows:
        latest[(int(row["mode"]), str(row["scenario"]))] = row
    table = []
    for mode, title in MODES.items():
        mine = [r for (m, _), r in sorted(latest.items()) if m == mode]
        if not mine:
            table.append({"mode": str(mode), "scenario": title, "expected": "", "observed": "not run", "pass": "-"})
        for row in mine:
            failed = [c["check"] for c in row.get("checks", []) if not c["ok"]]
            observed = _observed(row.get("observed", {}))
            if failed:
                observed += " | FAILED: " + "; ".join(failed)
            if row.get("error"):
                observed += " | ERROR: " + row["error"].strip().splitlines()[-1][:160]
            table.append({"mode": str(mode), "scenario": f"{title}: {row['scenario']}", "expected": row["expected"],
                          "observed": observed, "pass": "PASS" if row.get("passed") else "FAIL"})
    return table


def print_table(table: list[dict[str, str]]) -> None:
    for line in table:
        sys.stdout.write(f"[{line['pass']:4}] #{line['mode']:>2} {line['scenario']}\n")
        if line["expected"]:
            sys.stdout.write(f"         expected: {line['expected']}\n")
        sys.stdout.write(f"         observed: {line['observed']}\n")
    passed = sum(line["pass"] == "PASS" for line in table)
    sys.stdout.write(f"\n{passed} of {len(table)} scenarios passed\n")


def write_doc(table: list[dict[str, str]], *, command: str, wall_s: float, path: Path = DOC) -> None:
    load = os.getloadavg()[0]
    lines = [
        "# Fault suite",
        "",
        "The fifteen failures NeMo Gym users hit in production (`shared/reference/nemo-gym-pain-points.md` section 4),",
        "each automated as a scenario in `tests/faults/`: a real fleet (subprocesses, OS-chosen ports; network",
        "namespaces for the multi-host ones), the fault injected, the expected outcome asserted with numbers.",
        "",
        "Run it:",
        "",
        "* `python -m tests.faults.run_suite`: the CI part (a few minutes on 2 cores); prints this table and rewrites",
        "  this file. `pytest tests/faults -m 'not slow'` runs the same tests without the table.",
        "* `python -m tests.faults.run_suite --slow`: adds the long scenarios (10,000 concurrent rollouts; 1000",
        "  requests with 6-20 s pauses). `python bench/bench_10k.py` is the full 10k benchmark with its own table.",
        "* Multi-host scenarios (#3 blackhole, #6 path dark, #12) need root for `ip netns` and iptables; elsewhere",
        "  they are skipped and show as not run.",
        "",
        "Fault tools (`tests/faults/tools/`): `proxy.py` (userspace TCP proxy: latency, stall, drop, reset on",
        "command), `upstream.py` (OpenAI-compatible upstream with a 429 quota + Retry-After, 500s on a schedule,",
        "latency, serve-later), `procs.py` (SIGKILL/SIGSTOP, process trees, port checks), `netfaults.py` (fleets and",
        "upstreams inside namespaces, iptables DROP/REJECT), `fleet.py` (fleets, datasets, collections, accounting).",
        "",
        "What the scenarios found wrong in gymfleet, and the fix (each scenario failed before it):",
        "",
        "* #2: a rollout whose resources server was SIGKILLed and restarted on the same socket carried on against",
        "  the replacement, which did not know its session: 42 of 300 rollouts were recorded as reward 0. Servers",
        "  that keep sessions in memory (resources servers) now refuse another instance's session cookie with a typed",
        "  `409 session_lost` (`gymfleet/server/session.py`), so the rollout fails retryable and is run again.",
        "* #3/#4/#11: gymfleet servers answered an upstream failure with 502/504, which the caller's transport retried",
        "  (4 x 4 attempts across agent and model server). Typed error answers now carry `x-gymfleet-error` and are",
        "  final for the transport; an upstream 504/408 or 429 keeps its meaning one hop up (`upstream_timeout` 504,",
        "  `upstream_rate_limited` 429), so the collector records `timeout` / `rate_limited`, not `environment_error`.",
        "* #3/#6: a pooled connection reused after the path went dark hung until the 900 s deadline (Linux retransmits",
        "  ~15 min). Client sockets now set `TCP_USER_TIMEOUT` (30 s; env `GYMFLEET_TCP_USER_TIMEOUT_S`, keepalive via",
        "  `GYMFLEET_TCP_KEEPIDLE_S` / `_KEEPINTVL_S` / `_KEEPCNT`);",
        "  openai_model / vllm_model take `connect_timeout_s`.",
        "* #4: nothing bounded a `/verify` but the collector. `verify_timeout_s` (resources server config) cancels it",
        "  and answers `504 timeout`; `gymfleet.server.isolate.run_isolated` runs CPU-bound work",
        "  in a killable process.",
        "* #5: pool wait was invisible: `gymfleet_upstream_pool_wait_seconds{target}` (aiohttp trace) is exported.",
        "  At 10,000 rollouts the first answer took 9.7-12.7 s and ~2,500 connection attempts to the agent were reset",
        "  or timed out: uvicorn re-listened on the launcher's socket with its own backlog (2048), and all workers",
        "  shared one accept queue. Now the backlog stays at `net.core.somaxconn`, each of `num_workers` has its own",
        "  `SO_REUSEPORT` socket (its own queue), and the collector ramps admission up (slow start):",
        "  first answer ~3-4 s, 0 failed attempts.",
        "* #11: `Retry-After` was slept exactly, so every throttled caller came back in lockstep: now never sooner,",
        "  plus up to 25% jitter (`RetryPolicy.wait_after`).",
        "* #15: the launcher said ready with nothing behind `base_url`: it now waits for every model server's upstream",
        "  (`model_endpoint_readiness_timeout_seconds`, default 600, 0 skips; `gymfleet/launcher/endpoints.py`) and",
        "  fails naming each silent URL and its key.",
        "",
        f"Last run: `{command}`, {time.strftime('%Y-%m-%d %H:%M')}, {wall_s:.0f} s wall, {os.cpu_count()} CPUs, "
        f"load {load:.1f}.",
        "",
        "| # | scenario | expected | observed | pass |",
        "|---|---|---|---|---|",
    ]
    for line in table:
        lines.append(f"| {line['mode']} | {_cell(line['scenario'])} | {_cell(line['expected'])} | "
                     f"{_cell(line['observed'])} | {line['pass']} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", action="store_true", help="also run the scenarios marked slow")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/fault-suite.md")
    parser.add_argument("--results", help="JSON-lines file for the scenario records (default: a fresh temp file)")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression (a subset of scenarios)")
    parser.add_argument("--merge", action="append", default=[], metavar="FILE",
                        help="also show the records of an earlier run (e.g. a --slow one) in the table")
    args = parser.parse_args(argv)
    results = Path(args.results) if args.results else Path(tempfile.mkstemp(prefix="faults-", suffix=".jsonl")[1])
    results.write_text("")
    cmd = [sys.executable, "-m", "pytest", "tests/faults", "-q", "-p", "no:cacheprovider", "-rfEs", "--durations=10"]
    cmd += ["-m", "slow or not slow" if args.slow else "not slow"]  # the last -m wins over pyproject's addopts
    if args.keyword:
        cmd += ["-k", args.keyword]
    start = time.monotonic()
    try:
        code = subprocess.run(cmd, cwd=REPO, env={**os.environ, RESULTS_ENV: str(results)},
                              timeout=_SUITE_TIMEOUT_S).returncode
    except subprocess.TimeoutExpired:
        sys.stderr.write(f"the fault suite ran past {_SUITE_TIMEOUT_S}s and was stopped\n")
        code = 124
    wall = time.monotonic() - start
    table = build_table([*(r for extra in args.merge for r in read_results(Path(extra))), *read_results(results)])
    sys.stdout.write("\n")
    print_table(table)
    if not args.no_docs:
        shown = "python -m tests.faults.run_suite" + (" --slow" if args.slow else "")
        shown += "".join(f" --merge {Path(m).name}" for m in args.merge)
        write_doc(table, command=shown, wall_s=wall)
        sys.stdout.write(f"table written to {DOC.relative_to(REPO)}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
