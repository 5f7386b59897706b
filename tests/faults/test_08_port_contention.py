"""Mode 8: port contention on one node.

* Two deployments start at the same moment: both come up, on disjoint ports (the OS picks, the launcher binds and
  holds), and nobody can take a server's port between selection and bind: it stays bound by the launcher.
* A stale process holds a configured server port, or the head's well-known port: start-up fails at once with an
  error that names the holder (pid and command line), never "Process finished unexpectedly", never a hang.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.faults.tools import procs
from tests.faults.tools.fleet import EXAMPLE_CONFIG, REPO, SCRIPTED_CONFIG, fleet_env, start_fleet

ARGS = ["-c", EXAMPLE_CONFIG, "-c", SCRIPTED_CONFIG]
ENV_PORT = "example_single_tool_call.resources_servers.example_single_tool_call.port"


def _ports(fleet) -> set[int]:  # type: ignore[no-untyped-def]
    urls = [fleet.head_url, *(s["url"] for s in fleet.ready["servers"].values())]
    return {int(u.rsplit(":", 1)[1]) for u in urls}


def test_two_deployments_at_once_get_disjoint_held_ports(tmp_path: Path, scenario) -> None:
    sc = scenario(8, "two deployments start at once on one node",
                  "both ready, disjoint ports, every port held by its launcher (no TOCTOU window)")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    start = time.monotonic()
    with (
        start_fleet(tmp_path / "a", ARGS, wait_ready=False) as a,
        start_fleet(tmp_path / "b", ARGS, wait_ready=False) as b,
    ):
        for fleet, tmp in ((a, tmp_path / "a"), (b, tmp_path / "b")):
            procs.wait_for(lambda tmp=tmp, fleet=fleet: any(tmp.glob("ready-*.json")) or fleet.proc.poll() is not None,
                           90)
            ready = sorted(tmp.glob("ready-*.json"))
            assert ready, fleet.log()[-3000:]
            fleet.ready = json.loads(ready[0].read_text())
        both_ready_s = time.monotonic() - start
        ports_a, ports_b = _ports(a), _ports(b)
        grabbable = [p for p in ports_a | ports_b if procs.port_bindable(p)]
    sc.observe(both_ready_s=both_ready_s, ports_a=sorted(ports_a), ports_b=sorted(ports_b), grabbable=grabbable)
    sc.check("both deployments ready", bool(ports_a) and bool(ports_b))
    sc.check("disjoint ports", not ports_a & ports_b)
    sc.check("no port of a running deployment can be taken by another process", not grabbable)
    sc.finish()


def _launch_fails(tmp_path: Path, extra: list[str], *, base: list[str] = ARGS) -> tuple[int | None, str, float]:
    """``gymfleet run`` expected to fail: (exit code or None if it ran 60 s, its output, seconds it took)."""
    log = tmp_path / f"launch-{time.monotonic_ns()}.log"
    argv = [sys.executable, "-m", "gymfleet.cli.main", "run", *base, *extra, "--log-dir", str(tmp_path / "logs")]
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env={**os.environ, **fleet_env()}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        code = proc.wait(60)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(10)
    return code, log.read_text(errors="replace"), time.monotonic() - start


def test_stale_holder_of_a_server_port_or_the_head_port_is_named(tmp_path: Path, scenario) -> None:
    sc = scenario(8, "stale process holds a server port / the head's port",
                  "exit 1 within seconds, error names the holder's pid and command; never 'finished unexpectedly'")
    # A stale server from an earlier run: a child process listening on the port we are about to configure.
    stale = subprocess.Popen([sys.executable, "-c", "import socket,sys,time; s=socket.socket(); "
                              "s.bind(('127.0.0.1',0)); s.listen(); print(s.getsockname()[1], flush=True); "
                              "time.sleep(120)"], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert stale.stdout is not None
        port = int(stale.stdout.readline())
        code_s, log_s, wall_s = _launch_fails(tmp_path, ["++head_server.port=0", f"++{ENV_PORT}={port}"])
        code_h, log_h, wall_h = _launch_fails(tmp_path, [f"++head_server.port={port}"])
    finally:
        os.killpg(stale.pid, 9)
        stale.wait(10)
        if stale.stdout is not None:
            stale.stdout.close()
    sc.observe(server_port_exit=code_s, server_port_fail_s=wall_s, head_port_exit=code_h, head_port_fail_s=wall_h,
               message=next((line for line in log_s.splitlines() if "already in use" in line), "")[-240:])
    for what, code, log, wall in (("server port", code_s, log_s, wall_s), ("head port", code_h, log_h, wall_h)):
        sc.check(f"{what}: exit code 1", code == 1)
        sc.check(f"{what}: names the holder (pid {stale.pid})", f"pid {stale.pid}" in log and str(port) in log)
        sc.check(f"{what}: no 'finished unexpectedly'", "finished unexpectedly" not in log.lower())
        sc.check(f"{what}: fails within 15 s", wall < 15)
    sc.finish()


def test_port_taken_between_selection_and_bind_is_impossible(tmp_path: Path, scenario) -> None:
    """A racer binding every port the fleet advertises, while it runs and across a server restart, gets none."""
    sc = scenario(8, "another process grabs the chosen port (between selection and bind, or during a restart)",
                  "impossible: the launcher binds and holds; the restarted server keeps its port")
    with start_fleet(tmp_path, ARGS) as fleet:
        env = next(i for i in fleet.instances() if i["process_name"] == "example_single_tool_call")
        killed_at = procs.kill(env["pid"])  # in the restart window the port would be free unless the launcher held it
        racer_won = False
        back = None
        while time.monotonic() < killed_at + 30 and back is None:
            with socket.socket() as racer:
                try:
                    racer.bind(("127.0.0.1", env["port"]))
                    racer_won = True
                except OSError:
                    pass
            if any(i["process_name"] == "example_single_tool_call" and i["pid"] != env["pid"]
                   and i["status"] == "healthy" for i in fleet.instances()):
                back = time.monotonic() - killed_at
            time.sleep(0.01)
        new = next(i for i in fleet.instances() if i["process_name"] == "example_single_tool_call")
    sc.observe(racer_bound=racer_won, restart_s=back, old_port=env["port"], new_port=new["port"])
    sc.check("the racer never bound the port", not racer_won)
    sc.check("the restarted server serves on the same port", back is not None and new["port"] == env["port"])
    sc.finish()
