"""Append-only JSONL files that never hold a partial line.

Each record is serialized first and written with one ``os.write`` of the whole line on an
``O_APPEND`` descriptor, so a killed process leaves complete lines behind. If the disk fills
mid-line, the file is cut back to where the line started before the error surfaces. A torn
last line found when a file is reopened (power loss, or a file written by someone else) is cut
off and logged, never fatal.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson

from gymfleet.errors import RolloutError

__all__ = ["JsonlAppender", "repair_torn_tail"]

logger = logging.getLogger("gymfleet.rollouts")

_SCAN_BLOCK = 1 << 16


def repair_torn_tail(path: Path) -> int:
    """Cut ``path`` back to its last newline; return how many bytes were dropped (0 if intact)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "r+b") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        end = size
        keep = 0
        while end > 0:
            start = max(0, end - _SCAN_BLOCK)
            f.seek(start)
            block = f.read(end - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        f.seek(keep)
        torn = f.read(min(size - keep, 200))
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    dropped = size - keep
    logger.warning(
        "%s ended with a torn line (%d bytes, starting %r); cut back to the last complete line. "
        "The rollout it belonged to will be collected again.",
        path,
        dropped,
        torn[:80],
    )
    return dropped


class JsonlAppender:
    """One append-only JSONL file.

    Args:
        path: The file; parent directories are created.
        fsync_interval_ms: 0 fsyncs after every line, N > 0 at most every N ms (and on close),
            negative never. Every line is handed to the OS immediately either way.
        truncate: Start the file empty instead of appending.
    """

    def __init__(self, path: Path, *, fsync_interval_ms: float = 1000.0, truncate: bool = False) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not truncate:
            repair_torn_tail(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
        self._fd: int | None = os.open(path, flags, 0o644)
        # Only this appender writes the file, so its size is known without asking the OS per line.
        self._size = os.fstat(self._fd).st_size
        self._fsync_interval_s = fsync_interval_ms / 1000.0
        self._last_sync = time.monotonic()
        self._dirty = False
        self.lines_written = 0

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as one line. Raises ``TypeError`` for values JSON cannot hold."""
        data = orjson.dumps(record) + b"\n"
        self.write_line(data)

    def write_line(self, data: bytes) -> None:
        """Append one already-serialized line (must end with a newline)."""
        fd = self._fd
        if fd is None:
            raise RolloutError(f"{self.path} is closed; this is a bug in the collector, please report it")
        start = self._size
        view = memoryview(data)
        try:
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            # Never leave half a line: cut back to where this line began.
            try:
                os.ftruncate(fd, start)
            except OSError:
                logger.error("could not cut %s back after a failed write; resume will repair it", self.path)
            raise RolloutError(
                f"Could not write to {self.path}: {exc}. Free space or fix permissions, then resume "
                "with +resume_from_cache=true; nothing written so far is lost."
            ) from exc
        self._size = start + len(data)
        self.lines_written += 1
        self._dirty = True
        if self._fsync_interval_s == 0 or (
            self._fsync_interval_s > 0 and time.monotonic() - self._last_sync >= self._fsync_interval_s
        ):
            self.sync()

    def sync(self) -> None:
        """fsync the file if anything was written since the last sync."""
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
            self._dirty = False
            self._last_sync = time.monotonic()

    def close(self) -> None:
        """Sync (unless fsync is disabled) and close; idempotent."""
        if self._fd is None:
            return
        try:
            if self._fsync_interval_s >= 0:
                self.sync()
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
