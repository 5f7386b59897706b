"""Mode 1: the head (registry) is killed during a collection and restarted.

The head runs alone (``gymfleet run --head-only``); a worker launcher runs the servers, which register with it. While
rollouts are in flight the head is SIGKILLed and started again on its port with an empty registry. Expected:
in-flight rollouts finish; the servers re-register within about two heartbeats of the new head; a client that knows
only the head keeps routing during the outage (last known instances) and re-resolves after; no row is lost or
duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from pathlib import Path

from gymfleet import transport
from gymfleet.client import ServerClient
from gymfleet.errors import ClientError
from tests.faults.tools import procs
from tests.faults.tools.fleet import (
    FAULT_AGENT,
    FAULT_CONFIG,
    MODEL,
    SCRIPTED_CONFIG,
    account,
    collect,
    start_fleet,
    weather_rows,
)

LEASE_S = 3.0
HEARTBEAT_S = LEASE_S / 3
ROLLOUTS = 120
NAMES = {"faulty_env", FAULT_AGENT, "policy_model"}


class HeadOnlyCaller(threading.Thread):
    """A client that knows nothing but the head: calls a tool by name every 100 ms, counts failures."""

    def __init__(self, head_port: int) -> None:
        super().__init__(daemon=True)
        self.head_port = head_port
        self.ok = 0
        self.failed: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        async def loop() -> None:
            client = ServerClient({}, head_server_config={"host": "127.0.0.1", "port": self.head_port},
                                  cache_ttl_s=1.0, late_binding_timeout_s=5.0)
            try:
                while not self.halt.is_set():
                    try:
                        resp = await client.post("faulty_env", "/get_weather", json={"city": "x"},
                                                 timeout=transport.Timeouts(2.0, 5.0))
                        self.ok += resp.status == 200
                    except ClientError as exc:
                        self.failed.append(type(exc).__name__)
                    await asyncio.sleep(0.1)
            finally:
                await transport.close_sessions()

        asyncio.run(loop())


def test_head_killed_and_restarted_mid_collection(tmp_path: Path, scenario) -> None:
    sc = scenario(1, "head/registry SIGKILL + restart mid-collection",
                  "in-flight rollouts finish, servers re-register within ~2 heartbeats, head-only clients keep "
                  "routing and re-resolve, 0 lost / 0 duplicated")
    lease = [f"++registry_lease_s={LEASE_S}", "++registry_evict_after_s=30"]
    (tmp_path / "head1").mkdir()
    (tmp_path / "head2").mkdir()
    (tmp_path / "worker").mkdir()
    with contextlib.ExitStack() as stack:
        head = stack.enter_context(start_fleet(tmp_path / "head1", ["--head-only", *lease]))
        port = int(head.head_url.rsplit(":", 1)[1])
        worker = stack.enter_context(start_fleet(
            tmp_path / "worker", ["--worker", "-c", FAULT_CONFIG, "-c", SCRIPTED_CONFIG, f"++head_server.port={port}",
                                  f"++{MODEL}.latency_ms=300"]))
        caller = HeadOnlyCaller(port)
        caller.start()
        timeline: dict[str, float | None] = {}

        def listed(fleet) -> set[str]:  # type: ignore[no-untyped-def]
            with contextlib.suppress(Exception):
                return {i["process_name"] for i in fleet.instances() if i["status"] == "healthy"}
            return set()

        def kill_and_restart() -> None:
            time.sleep(2.0)  # rollouts in flight
            os.killpg(head.proc.pid, signal.SIGKILL)
            head.proc.wait(10)
            timeline["killed"] = time.monotonic()
            new = stack.enter_context(start_fleet(tmp_path / "head2", ["--head-only", *lease,
                                                                       f"++head_server.port={port}"]))
            timeline["head_up"] = time.monotonic()
            timeline["reregistered_s"] = procs.wait_for(lambda: listed(new) == NAMES, 30)

        restarter = threading.Thread(target=kill_and_restart, daemon=True)
        restarter.start()
        out = tmp_path / "head-restart.jsonl"
        _, error, wall = collect(worker.head_url, weather_rows(ROLLOUTS), out, agent=FAULT_AGENT,
                                 num_samples_in_parallel=16, rollout_timeout_s=60)
        restarter.join(60)
        time.sleep(1.0)  # the head-only caller re-resolves through the new head
        caller.halt.set()
        caller.join(15)
    acc = account(out, ROLLOUTS)
    killed = timeline.get("killed")
    sc.observe(head_down_s=(timeline["head_up"] - killed) if killed and timeline.get("head_up") else None,
               reregistered_after_head_up_s=timeline.get("reregistered_s"), heartbeat_s=HEARTBEAT_S,
               collection_wall_s=wall, succeeded=acc["succeeded"], failed=acc["failed"], lost=acc["lost"],
               duplicated=acc["duplicated"], head_only_client_ok=caller.ok, head_only_client_failed=caller.failed,
               error=str(error) if error else None)
    sc.check("the head was killed while rollouts were in flight", killed is not None and acc["succeeded"] > 0)
    sc.check("all servers re-registered within 2 heartbeats + 2 s of the new head",
             timeline.get("reregistered_s") is not None and timeline["reregistered_s"] <= 2 * HEARTBEAT_S + 2)
    sc.check("every rollout succeeded (in-flight ones finished)", acc["succeeded"] == ROLLOUTS and error is None)
    sc.check("rows lost == 0 and duplicated == 0", acc["lost"] == 0 and acc["duplicated"] == 0)
    sc.check("the head-only client never failed (routed to last known instances while the head was down)",
             not caller.failed and caller.ok > 0)
    sc.finish()
