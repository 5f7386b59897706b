"""Mode 10: infrastructure failures disguised as reward 0.

Injected: the model server answers 500 on every 4th call; verifiers hit a dependency missing on this node
(``ModuleNotFoundError``), a file staged on another node (``FileNotFoundError``) and a bug; the agent server is
SIGKILLed mid-collection (an OOM kill). Expected: every such rollout is a typed failure in the failures file, never
a reward-0 success; reward statistics come from real rewards only; past ``max_failure_rate`` the run aborts, and a
shortfall of rollouts reaches the caller as an error.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from gymfleet.rollouts import CollectionAbortedError
from tests.faults.tools import procs
from tests.faults.tools.fleet import (
    FAULT_AGENT,
    FAULT_CONFIG,
    MODEL,
    SCRIPTED_CONFIG,
    account,
    collect,
    read_jsonl,
    start_fleet,
    weather_rows,
)

ROWS = 40
FAULTS = {1: "import_error", 2: "missing_file", 3: "crash"}  # by row index % 10


def test_infrastructure_failures_are_typed_and_kept_out_of_rewards(tmp_path: Path, scenario) -> None:
    sc = scenario(10, "infrastructure failures (model 500s, missing dep/file, verifier bug, agent OOM-kill)",
                  "typed failures only (0 reward-0 rows), rewards from real rewards only, abort past the "
                  "failure-rate threshold, shortfall is an error")
    rows = weather_rows(ROWS)
    for i, row in enumerate(rows):
        if i % 10 in FAULTS:
            row["fault"] = FAULTS[i % 10]
    args = ["-c", FAULT_CONFIG, "-c", SCRIPTED_CONFIG, f"++{MODEL}.fail_every_n=4", f"++{MODEL}.latency_ms=100"]
    with start_fleet(tmp_path, args) as fleet:
        agent_pid = next(i["pid"] for i in fleet.instances() if i["process_name"] == FAULT_AGENT)

        def oom_kill() -> None:
            time.sleep(1.0)
            procs.kill(agent_pid)

        killer = threading.Timer(0.0, oom_kill)
        killer.start()
        out = tmp_path / "typed.jsonl"
        summary, error, _ = collect(fleet.head_url, rows, out, agent=FAULT_AGENT, num_samples_in_parallel=8,
                                    max_attempts=1, max_failure_rate=1.0, disable_aggregation=False)
        killer.join()
        typed = account(out, ROWS)
        fault_successes = [r for r in read_jsonl(out) if r.get("fault")]
        metrics = json.loads(out.with_name("typed_aggregate_metrics.json").read_text())
        mean_reward = metrics[0]["key_metrics"].get("mean/reward")
        # Same faults, a failure-rate threshold of 20%: the run stops itself and says how many are missing.
        out2 = tmp_path / "abort.jsonl"
        summary2, error2, _ = collect(fleet.head_url, [*rows, *rows, *rows], out2, agent=FAULT_AGENT,
                                      num_samples_in_parallel=4, max_attempts=1, max_failure_rate=0.2,
                                      min_rows_for_failure_rate=10)
    aborted = account(out2, 3 * ROWS)
    sc.observe(succeeded=typed["succeeded"], failure_classes=typed["classes"], rewards=typed["rewards"],
               mean_reward_in_metrics=mean_reward, lost=typed["lost"], duplicated=typed["duplicated"],
               abort_error=type(error2).__name__ if error2 else None,
               abort_missing=summary2.missing if summary2 else None, abort_ok=summary2.ok if summary2 else None)
    sc.check("some rollouts still succeeded", typed["succeeded"] > 0)
    sc.check("0 reward-0 rows: every success has reward 1.0", typed["rewards"] == {1.0: typed["succeeded"]})
    sc.check("failures are typed model_error / environment_error / connection_error / agent_error only",
             set(typed["classes"]) <= {"model_error", "environment_error", "connection_error", "agent_error"}
             and {"model_error", "environment_error"} <= set(typed["classes"]))
    sc.check("no environment-fault row 'succeeded' (each is a typed failure)", not fault_successes)
    sc.check("rows lost == 0 and duplicated == 0", typed["lost"] == 0 and typed["duplicated"] == 0)
    sc.check("reward statistics from real rewards only (mean/reward == 1.0)", mean_reward == 1.0)
    sc.check("past max_failure_rate the run aborts (CollectionAbortedError)",
             isinstance(error2, CollectionAbortedError))
    sc.check("the shortfall is reported (missing > 0, summary not ok)",
             summary2 is not None and summary2.missing > 0 and not summary2.ok and aborted["lost"] > 0)
    sc.check("0 reward-0 rows in the aborted run", aborted["rewards"] in ({}, {1.0: aborted["succeeded"]}))
    sc.finish()
