"""A tiny launcher: supervises tests/launcher/scripts/child.py, then waits to be SIGKILLed.

Usage: mini_launcher.py PIDFILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from gymfleet.launcher.logs import ProcessLog
from gymfleet.launcher.process import ManagedProcess

CHILD = Path(__file__).with_name("child.py")


async def main(pidfile: str) -> None:
    child = ManagedProcess(
        "child",
        [sys.executable, str(CHILD), "--grandchild", "--group-kill-on-term", "--pidfile", pidfile],
        log=ProcessLog("child", quiet=True),
    )
    await child.start()
    try:
        await asyncio.sleep(30)  # the test kills us long before this
    finally:
        await child.stop(1.0)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
