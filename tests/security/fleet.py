"""Helpers for security tests on real subprocess fleets: the process tree, and what each process exposes."""

from __future__ import annotations

import os
from pathlib import Path

from tests.fleet_helpers import REPO


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it (by parent pid), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def exposed_text(pid: int) -> str:
    """What other tools see of a process: its command line and its initial environment."""
    parts = []
    for name in ("cmdline", "environ"):
        try:
            parts.append(Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return "\n".join(parts)


def config_path(relative: str) -> str:
    return str(REPO / relative)
