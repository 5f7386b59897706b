"""Pre-forked worker processes for one server instance (``num_workers: N`` in its config block).

Each worker accepts on a listening socket of its own in one ``SO_REUSEPORT`` group on the instance's port (the
launcher binds the port with ``reuse_port`` when ``num_workers > 1``): the kernel spreads new connections evenly and
every worker has its own accept queue, so one instance holds more concurrent connections than one process's
file-descriptor limit allows, absorbs connection bursts ``num_workers`` times larger, and uses more than one core.
Only the first process registers with the head (the workers share its URL and instance id); the others die with it
(``PR_SET_PDEATHSIG``) and are taken down with its process group on a normal stop.

In-memory state is per worker: use ``num_workers > 1`` for stateless servers (agents, model proxies), not for a
resources server that keeps per-session state in memory.
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import signal

__all__ = ["fork_workers"]

logger = logging.getLogger("gymfleet.server")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's process-group kill still stops us
        pass


def fork_workers(extra: int) -> int:
    """Fork ``extra`` worker processes. Returns the worker index: 0 in the original process, 1..extra in workers.

    Call before any thread or event loop exists in this process.
    """
    parent = os.getpid()
    for index in range(1, extra + 1):
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(0)
            random.seed()  # forked processes must not share random streams (uuid4 uses os.urandom: fine)
            return index
        logger.info("started worker %d (pid %d)", index, pid)
    return 0
