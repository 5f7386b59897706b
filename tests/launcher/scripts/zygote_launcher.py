"""A launcher with a zygote: forks it first, supervises child.py through it, then waits to be SIGKILLed.

Usage: zygote_launcher.py PIDFILE [child.py options]. Writes PIDFILE.zygote with the zygote's pid.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from gymfleet.launcher import zygote
from gymfleet.launcher.logs import ProcessLog
from gymfleet.launcher.process import ManagedProcess

CHILD = Path(__file__).with_name("child.py")


async def main(pidfile: str, extra: list[str]) -> None:
    child = ManagedProcess(
        "child",
        [sys.executable, str(CHILD), "--grandchild", "--pidfile", pidfile, *extra],
        log=ProcessLog("child", quiet=True),
    )
    await child.start()
    running = zygote.default_zygote()
    Path(pidfile + ".zygote").write_text(str(running.pid if running else 0))
    try:
        await asyncio.sleep(30)  # the test kills us long before this
    finally:
        await child.stop(1.0)


if __name__ == "__main__":
    # Before the event loop: the zygote is a fork of this process. It needs nothing preloaded for child.py.
    zygote.start_default("fork", preload=())
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
