"""The generated Slurm batch script on a real (one-node) Slurm cluster: fleet up, rollouts collected, job
exits 0, nothing left running."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

from gymfleet.deploy import generate
from tests.e2e.engines import free_port, slurm_cluster
from tests.fleet_helpers import (
    AGENT,
    EXAMPLE_CONFIG,
    EXAMPLE_DATA,
    REPO,
    SCRIPTED_CONFIG,
    pid_alive,
    wait_until,
)

pytestmark = pytest.mark.slow


def test_batch_script_runs_fleet_collects_rollouts_and_exits_zero(tmp_path: Path) -> None:
    started = time.monotonic()
    with slurm_cluster() as cluster:
        cluster_s = time.monotonic() - started
        outdir = tmp_path / "deploy"
        output = tmp_path / "rollouts.jsonl"
        generate(
            "slurm",
            [str(REPO / EXAMPLE_CONFIG), str(REPO / SCRIPTED_CONFIG)],
            outdir,
            {
                "name": "gf-e2e",
                "head_port": free_port(),
                "time_limit": "00:10:00",
                "startup_timeout_s": 120,
                "gymfleet_command": f"{sys.executable} -m gymfleet.cli.main",
                "collect": {
                    "agent": AGENT,
                    "input": str(EXAMPLE_DATA),
                    "output": str(output),
                    "num_repeats": 2,
                },
            },
        )
        submitted = cluster.cmd("sbatch", "--parsable", "fleet.sbatch", cwd=outdir)
        assert submitted.returncode == 0, submitted.stderr + cluster.logs()
        job = submitted.stdout.strip().split(";")[0]
        t0 = time.monotonic()

        def state() -> str:
            out = cluster.cmd("scontrol", "show", "job", "-o", job, timeout_s=10).stdout
            match = re.search(r"JobState=(\S+).*ExitCode=(\S+)", out)
            return f"{match.group(1)} {match.group(2)}" if match else "UNKNOWN"

        finished = wait_until(
            lambda: (
                state().split()[0]
                in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
            ),
            240.0,
            1.0,
        )
        job_s = time.monotonic() - t0
        job_out = outdir / f"gf-e2e-{job}.out"
        log = job_out.read_text(errors="replace") if job_out.exists() else "(no job output)"
        run_dir = outdir / f"run-{job}"
        step_logs = "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted((run_dir / "logs").glob("*.log"))
        )
        assert finished and state() == "COMPLETED 0:0", (
            f"job {job}: {state()}\n{log}\n{step_logs}\n{cluster.logs()}"
        )

        rows = [json.loads(line) for line in output.read_text().splitlines() if line.strip()]
        expected = 2 * len(EXAMPLE_DATA.read_text().splitlines())
        assert len(rows) == expected and all(r["reward"] == 1.0 for r in rows), log
        assert "gymfleet: rollouts collected" in log and "gymfleet: stopped (exit 0)" in log

        # The teardown took every step down: no head, launcher or server process of the job survives.
        pids = []
        for ready in run_dir.glob("ready-*.json"):
            data = json.loads(ready.read_text())
            pids.append(int(data["launcher_pid"]))
            pids += [int(s["pid"]) for s in data.get("servers", {}).values() if s.get("pid")]
        assert pids and wait_until(lambda: not any(pid_alive(p) for p in pids), 10.0, 0.2), pids
    print(
        "slurm e2e timings:",
        json.dumps(
            {
                "cluster_s": round(cluster_s, 1),
                "job_s": round(job_s, 1),
                "total_s": round(time.monotonic() - started, 1),
            }
        ),
    )
