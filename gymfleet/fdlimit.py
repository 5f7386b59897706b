"""Raise this process's open-file limit to what the system allows (each connection costs one descriptor)."""

from __future__ import annotations

import logging

__all__ = ["raise_open_file_limit"]

logger = logging.getLogger("gymfleet")


def raise_open_file_limit(wanted: int = 65536) -> int:
    """Set the soft RLIMIT_NOFILE to min(wanted, hard limit); return the soft limit now in force."""
    try:
        import resource
    except ImportError:  # not POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft
