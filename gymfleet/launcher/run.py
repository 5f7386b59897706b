"""Run a fleet in the foreground until SIGINT/SIGTERM (what ``ng_run`` / ``gymfleet run`` do)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import Any

from gymfleet.launcher import zygote
from gymfleet.launcher.supervisor import Fleet, LaunchOptions

__all__ = ["run_fleet"]

logger = logging.getLogger("gymfleet.launcher")


async def _run_until_signal(fleet: Fleet) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        startup = asyncio.create_task(fleet.start())
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({startup, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if startup not in done:  # Ctrl-C during startup: stop what was started
            startup.cancel()
            await asyncio.gather(startup, return_exceptions=True)
            await fleet.stop()
            return
        stopper.cancel()
        startup.result()
        for line in fleet.summary():
            logger.info("  %(name)s (%(server_type)s/%(impl)s) %(url)s pid=%(pid)s", line)
        waiter = asyncio.create_task(fleet.wait())
        await stop.wait()
        waiter.cancel()
        logger.info("stopping the fleet...")
        await fleet.stop()
        logger.info("fleet stopped")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_fleet(config: Any, options: LaunchOptions | None = None) -> None:
    """Start a fleet and serve until SIGINT/SIGTERM, then stop everything (blocking).

    Servers are forked from a zygote (see :mod:`gymfleet.launcher.zygote`) unless the spawn method is
    ``exec``. It is forked here, after the launcher's imports and before the event loop and any thread
    exist, which is the only moment a fork of this process is safe.
    """
    options = options or LaunchOptions()
    fleet = Fleet(config, options)
    own = None
    if options.mode != "head-only" and zygote.default_zygote() is None:
        if zygote.resolve_spawn_method(options.spawn_method, fleet.config.get("spawn_method")) == "zygote":
            zygote.preload()  # most of it the head needs too: imported once, shared with every fork
            own = zygote.start_default()
    # The imported modules live as long as the launcher: keep the collector off them (exit skips a full
    # collection of them, hundreds of ms on a busy machine). preload() above has done it already.
    gc.freeze()
    try:
        asyncio.run(_run_until_signal(fleet))
    finally:
        if own is not None:
            zygote.close_default()
