"""Registry leases with a controllable clock (no sleeping)."""

from __future__ import annotations

import pytest

from gymfleet.head.registry import InstanceInfo, Registry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def info(name: str = "res", port: int = 8080, instance_id: str | None = None) -> InstanceInfo:
    return InstanceInfo(instance_id=instance_id, name=name, server_type="resources_servers", impl="impl",
                        host="127.0.0.1", port=port, url=f"http://127.0.0.1:{port}", pid=1)


def test_register_heartbeat_unhealthy_evict_cycle():
    clock = Clock()
    reg = Registry(lease_s=10, evict_after_s=30, clock=clock, wall_clock=clock)
    entry = reg.register(info())
    assert [e.status for e in reg.instances()] == ["healthy"]
    clock.now += 9
    assert reg.sweep() == ([], [])
    assert reg.heartbeat(entry.instance_id)
    clock.now += 11
    marked, evicted = reg.sweep()
    assert marked == [entry.instance_id] and evicted == []
    assert reg.by_name("res") == [] and len(reg.by_name("res", healthy_only=False)) == 1
    assert reg.heartbeat(entry.instance_id)  # a late heartbeat heals it
    assert reg.by_name("res")[0].status == "healthy"
    clock.now += 41
    assert reg.sweep() == ([], [entry.instance_id])
    assert len(reg) == 0
    assert not reg.heartbeat(entry.instance_id)  # unknown -> the server must register again


def test_reregistration_is_idempotent_and_restart_replaces_old_entry():
    reg = Registry()
    first = reg.register(info(instance_id="a"))
    again = reg.register(info(instance_id="a"))
    assert first is again and len(reg) == 1
    reg.register(info(instance_id="b"))  # same name and URL: the restarted process replaces the old one
    assert [e.instance_id for e in reg.instances()] == ["b"]
    reg.register(info(instance_id="c", port=8081))  # a replica elsewhere is kept
    assert len(reg.by_name("res")) == 2


def test_version_changes_only_when_routing_changes():
    reg = Registry()
    v0 = reg.version
    entry = reg.register(info())
    v1 = reg.version
    assert v1 > v0
    reg.heartbeat(entry.instance_id)
    assert reg.version == v1
    reg.deregister(entry.instance_id)
    assert reg.version > v1


def test_display_has_nemo_gym_fields():
    clock = Clock()
    reg = Registry(clock=clock, wall_clock=clock)
    reg.register(info())
    clock.now += 5
    row = reg.display()[0]
    assert list(row)[:13] == ["config_path", "dir_path", "entrypoint", "host", "name", "pid", "port", "process_name",
                              "server_type", "start_time", "status", "uptime_seconds", "url"]
    assert row["uptime_seconds"] == 5.0 and row["process_name"] == "res" and row["name"] == "impl"


def test_invalid_info_is_rejected():
    with pytest.raises(ValueError):
        InstanceInfo(name="", server_type="resources_servers", impl="x", host="h", port=1, url="u")
    with pytest.raises(ValueError):
        InstanceInfo(name="a", server_type="nope", impl="x", host="h", port=1, url="u")  # type: ignore[arg-type]
