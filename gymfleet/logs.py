"""One logging setup for every gymfleet process: named loggers under ``gymfleet.*``, stderr, no prints."""

from __future__ import annotations

import logging
import os
import sys

from gymfleet.log_masking import attach_secret_masking

__all__ = ["configure_logging"]

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (it may be replaced after set-up, e.g. by test capture)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure_logging(*, verbose: bool = False, quiet: bool = False) -> None:
    """Send ``gymfleet.*`` (and uvicorn's error log) to stderr. Idempotent; respects ``GYMFLEET_LOG_LEVEL``."""
    level_name = os.environ.get("GYMFLEET_LOG_LEVEL")
    if level_name:
        level = logging.getLevelName(level_name.upper())
    else:
        level = logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO)
    root = logging.getLogger("gymfleet")
    if not any(getattr(h, "_gymfleet", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        handler._gymfleet = True  # type: ignore[attr-defined]
        attach_secret_masking(handler)  # secrets applied before or after this call are masked on it
        root.addHandler(handler)
        root.propagate = False
        for name in ("uvicorn", "uvicorn.error"):
            logging.getLogger(name).handlers = [handler]
            logging.getLogger(name).propagate = False
    root.setLevel(level)
    logging.getLogger("uvicorn.error").setLevel(max(level, logging.WARNING) if not verbose else level)
