"""num_workers: several processes serve one instance's port, each on its own SO_REUSEPORT socket (its own accept
queue); one registration; they die together."""

from __future__ import annotations

import os
import signal

import httpx

from tests.fleet_helpers import AGENT, EXAMPLE_CONFIG, SCRIPTED_CONFIG, pid_alive, run_fleet_process, wait_until


def worker_pids(primary: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == primary:
                        kids.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return kids


def listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def run_rollouts(agent_url: str, city: str, n: int) -> list[float]:
    tool = {"type": "function", "name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    with httpx.Client(timeout=30) as client:
        return [client.post(agent_url + "/run", json={"responses_create_params": {
            "input": f"weather in {city}?", "tools": [tool]}}).json()["reward"] for _ in range(n)]


def test_agent_with_three_workers_serves_and_registers_once(tmp_path):
    args = ["-c", EXAMPLE_CONFIG, "-c", SCRIPTED_CONFIG, "++head_server.port=0",
            f"++{AGENT}.responses_api_agents.simple_agent.num_workers=3"]
    with run_fleet_process(tmp_path, args) as fleet:
        agents = [i for i in fleet.instances() if i["process_name"] == AGENT]
        assert len(agents) == 1  # one instance, one URL, whatever the worker count
        primary = agents[0]["pid"]
        workers = worker_pids(primary)
        assert len(workers) == 2, workers
        # One listening socket per worker on the one port: three accept queues, each held by exactly one worker.
        listening = listening_inodes(int(fleet.url(AGENT).rsplit(":", 1)[1]))
        assert len(listening) == 3, listening
        held = [socket_inodes(p) & listening for p in (primary, *workers)]
        assert all(len(h) == 1 for h in held) and len(set().union(*held)) == 3, held
        assert run_rollouts(fleet.url(AGENT), "Rome", 12) == [1.0] * 12
        os.kill(primary, signal.SIGKILL)  # workers must not outlive their primary
        assert wait_until(lambda: not any(pid_alive(p) for p in workers), 10)
        # The launcher restarts the instance on the same port: three workers, three queues again, and it serves
        # (connections made while it was down waited in the launcher-held socket's queue).
        port = int(fleet.url(AGENT).rsplit(":", 1)[1])

        def restarted() -> bool:
            now = [i for i in fleet.instances() if i["process_name"] == AGENT and i["pid"] != primary]
            return any(len(worker_pids(i["pid"])) == 2 for i in now)

        assert wait_until(restarted, 30)
        assert wait_until(lambda: len(listening_inodes(port)) == 3, 10), listening_inodes(port)
        assert run_rollouts(fleet.url(AGENT), "Oslo", 12) == [1.0] * 12
