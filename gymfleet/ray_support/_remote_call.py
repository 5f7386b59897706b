"""The function every offloaded call runs inside: it calls the user's function and reports where it ran.

Kept free of gymfleet imports and shipped to Ray by value, so a Ray worker node needs only Ray (and the
user function's own dependencies), not gymfleet.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any


def traced_call(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, str, int, str, float]:
    """Run ``fn(*args, **kwargs)``; return (value, node id, pid, hostname, seconds)."""
    start = time.monotonic()
    value = fn(*args, **kwargs)
    elapsed = time.monotonic() - start
    node = ""
    ray = sys.modules.get("ray")  # loaded in every Ray worker; never imported here (a local pool worker)
    if ray is not None:
        try:
            if ray.is_initialized():
                node = ray.get_runtime_context().get_node_id()
        except Exception:  # an old Ray without this API: the node id is informational
            node = ""
    return value, node, os.getpid(), os.uname().nodename, elapsed
