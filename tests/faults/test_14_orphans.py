"""Mode 14: unclean shutdown must not leave orphans (processes, zombies, bound ports).

* Ctrl+C while the fleet is still starting (one server never becomes ready);
* SIGKILL of the launcher while servers and a server's sidecar run: everything goes, and an immediate restart on the
  same ports succeeds;
* a server killed while its sidecar runs: the sidecar goes with it (and the restarted server starts a new one).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from tests.faults.tools import procs
from tests.faults.tools.fleet import FAULT_CONFIG, SCRIPTED_CONFIG, start_fleet

SIDECAR = "++faulty_env.resources_servers.faulty_env.sidecar=true"
PORT_KEYS = {
    "faulty_env": "faulty_env.resources_servers.faulty_env.port",
    "faulty_agent": "faulty_agent.responses_api_agents.simple_agent.port",
    "policy_model": "policy_model.responses_api_models.scripted_model.port",
}


def _ports(fleet) -> dict[str, int]:  # type: ignore[no-untyped-def]
    ports = {name: int(s["url"].rsplit(":", 1)[1]) for name, s in fleet.ready["servers"].items()}
    ports["head_server"] = int(fleet.head_url.rsplit(":", 1)[1])
    return ports


def test_ctrl_c_during_startup_leaves_nothing(tmp_path: Path, scenario) -> None:
    sc = scenario(14, "Ctrl+C during start-up", "launcher exits, 0 surviving processes, 0 zombies, ports free")
    args = ["-c", "tests/servers/configs/hang_on_start.yaml", "-c", SCRIPTED_CONFIG]
    with start_fleet(tmp_path, args, wait_ready=False) as fleet:
        spawned = procs.wait_for(lambda: len(procs.descendants(fleet.proc.pid)) >= 2, 30)
        time.sleep(1.0)  # the servers are importing / hanging in start-up
        family = procs.descendants(fleet.proc.pid)
        start = time.monotonic()
        fleet.proc.send_signal(signal.SIGINT)
        try:
            code = fleet.proc.wait(30)
        except Exception:
            code = None
        exit_s = time.monotonic() - start
        gone_s = procs.wait_gone(family, 10)
    sc.observe(processes_before=len(family), spawned_s=spawned, launcher_exit=code, exit_s=exit_s,
               all_gone_s=gone_s, survivors=[p for p in family if procs.pid_alive(p)])
    sc.check("servers were starting when Ctrl+C came", len(family) >= 2)
    sc.check("launcher exited within 15 s", code is not None and exit_s < 15)
    sc.check("0 surviving processes (no zombies)", gone_s is not None)
    sc.finish()


def test_sigkill_of_the_launcher_then_immediate_restart_on_the_same_ports(tmp_path: Path, scenario) -> None:
    sc = scenario(14, "SIGKILL of the launcher (servers + a sidecar running)",
                  "every process gone (sidecar included), every port free, immediate restart on the same ports works")
    args = ["-c", FAULT_CONFIG, "-c", SCRIPTED_CONFIG, SIDECAR]
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with start_fleet(tmp_path / "first", args) as fleet:
        sidecar = httpx.get(fleet.url("faulty_env") + "/sidecar", timeout=10).json()
        family = procs.descendants(fleet.proc.pid)
        ports = _ports(fleet)
        killed_at = procs.kill(fleet.proc.pid)
        fleet.proc.wait(10)
        gone_s = procs.wait_gone(family, 15)
        free_s = procs.wait_for(lambda: all(procs.port_bindable(p) for p in [*ports.values(), sidecar["port"]]), 15)
        survivors = [p for p in family if procs.pid_alive(p)]
        held = {p: procs.holder_of(p) for p in [*ports.values(), sidecar["port"]] if not procs.port_bindable(p)}
    pinned = [f"++head_server.port={ports['head_server']}", *(f"++{key}={ports[name]}" for name, key in
                                                              PORT_KEYS.items())]
    restart_at = time.monotonic()
    with start_fleet(tmp_path / "second", [*args, *pinned]) as again:
        restart_s = time.monotonic() - restart_at
        same = _ports(again) == ports
    sc.observe(processes=len(family), sidecar_pid=sidecar["pid"], all_gone_s=gone_s, ports_free_s=free_s,
               survivors=survivors, still_held=held, restart_ready_s=restart_s, since_kill_s=restart_at - killed_at)
    sc.check("the sidecar was one of the processes", sidecar["pid"] in family)
    sc.check("0 surviving processes within 15 s", gone_s is not None and not survivors)
    sc.check("every port (servers, head, sidecar) free", free_s is not None and not held)
    sc.check("immediate restart on the same ports succeeded", same)
    sc.finish()


def test_server_killed_takes_its_sidecar_with_it(tmp_path: Path, scenario) -> None:
    sc = scenario(14, "server dies while its sidecar runs",
                  "sidecar gone within seconds; restarted server has a new one")
    with start_fleet(tmp_path, ["-c", FAULT_CONFIG, "-c", SCRIPTED_CONFIG, SIDECAR]) as fleet:
        url = fleet.url("faulty_env")
        first = httpx.get(url + "/sidecar", timeout=10).json()
        server_pid = next(i["pid"] for i in fleet.instances() if i["process_name"] == "faulty_env")
        procs.kill(server_pid)
        sidecar_gone_s = procs.wait_gone([first["pid"]], 15)
        port_free = procs.wait_for(lambda: procs.port_bindable(first["port"]), 10)
        back = procs.wait_for(lambda: any(i["process_name"] == "faulty_env" and i["pid"] != server_pid
                                          and i["status"] == "healthy" for i in fleet.instances()), 30)
        second = httpx.get(url + "/sidecar", timeout=10).json() if back is not None else {}
    sc.observe(sidecar_gone_s=sidecar_gone_s, sidecar_port_free_s=port_free, server_back_s=back,
               new_sidecar=second.get("pid"))
    sc.check("sidecar gone within 15 s of its server's death", sidecar_gone_s is not None)
    sc.check("sidecar's port free", port_free is not None)
    sc.check("server restarted with a new sidecar", back is not None and second.get("pid") not in (None, first["pid"]))
    sc.finish()
