"""SIGINT/SIGTERM handling for a collection run, installed only while it runs."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["install_signal_handlers"]


def install_signal_handlers(on_signal: Callable[[signal.Signals], None]) -> list[Callable[[], None]]:
    """Route SIGINT and SIGTERM to ``on_signal`` on the running loop; return the undo callables.

    Does nothing outside the main thread (signals are only delivered there) or where the loop
    cannot handle signals. Undoing restores whatever handler was installed before.
    """
    if threading.current_thread() is not threading.main_thread():
        return []
    loop = asyncio.get_running_loop()
    undo: list[Callable[[], None]] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue

        def restore(sig: signal.Signals = sig, previous: Any = previous) -> None:
            loop.remove_signal_handler(sig)
            if previous is not None:
                signal.signal(sig, previous)

        undo.append(restore)
    return undo
