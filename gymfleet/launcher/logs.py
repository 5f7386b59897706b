"""The output of one server process: terminal, log file and the last lines kept in memory.

Each line a child writes (stdout and stderr combined) goes three ways:

* the per-server log file ``<log_dir>/<name>.log``: every byte, exactly as written (append mode);
* a ring buffer of the last ``ring_size`` lines, for error messages ("the server exited; its last
  lines were ...");
* the terminal (or any sink callable), prefixed ``(<name>) ``.

Drop policy: the log file and the ring buffer always get every line. The terminal does not: lines for
the sink go through a bounded queue drained by a writer thread, so a slow terminal (a paused ``less``,
a stalled SSH session) never blocks the event loop. When the queue is full, new lines are dropped and
counted, and a note with the count and the log file's path is shown once the sink catches up.
Lines longer than ``max_line_bytes`` are cut for the ring buffer and the sink (the file keeps them
whole); undecodable bytes become U+FFFD and control characters other than tab and ESC are replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["ProcessLog", "log_file_name"]

logger = logging.getLogger("gymfleet.launcher")

_READ_CHUNK = 64 * 1024
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0a-\x1a\x1c-\x1f\x7f]")
_WRITER_POLL_S = 0.2


def log_file_name(name: str) -> str:
    """The log file name for a server: ``/`` and other path-unsafe characters become ``_``."""
    safe = re.sub(r"[^A-Za-z0-9._+=@-]", "_", name).lstrip(".")
    return f"{safe or 'server'}.log"


def _default_sink(text: str) -> None:
    # Looked up at call time: the launcher (or pytest) may replace sys.stderr.
    stream = sys.stderr
    stream.write(text + "\n")
    stream.flush()


class ProcessLog:
    """Collects the combined output of one server process (see the module docstring).

    Args:
        name: The server's name, used for the prefix and the file name.
        log_dir: Folder for ``<name>.log`` (created if missing); None keeps no file.
        sink: Receives each prefixed line (no trailing newline), from a writer thread; default:
            write to the launcher's ``sys.stderr``.
        quiet: Show nothing on the sink (the file and the ring buffer still get every line).
        ring_size: How many last lines to keep in memory.
        max_line_bytes: Longest line kept in memory or shown; longer lines are cut.
        queue_size: Lines that may wait for a slow sink before new ones are dropped.
    """

    def __init__(
        self,
        name: str,
        *,
        log_dir: str | Path | None = None,
        sink: Callable[[str], None] | None = None,
        quiet: bool = False,
        ring_size: int = 50,
        max_line_bytes: int = 16 * 1024,
        queue_size: int = 10_000,
    ) -> None:
        self.name = name
        self.path: Path | None = Path(log_dir) / log_file_name(name) if log_dir is not None else None
        self.quiet = quiet
        self._sink = sink or _default_sink
        self._prefix = f"({name}) "
        self._ring: deque[str] = deque(maxlen=ring_size)
        self._max_line_bytes = max_line_bytes
        self._file: BinaryIO | None = None
        self._file_at_line_start = True
        self._queue: queue.Queue[str] = queue.Queue(maxsize=queue_size)
        self._dropped = 0
        self._writer: threading.Thread | None = None
        self._writer_stop = threading.Event()
        self._lock = threading.Lock()  # guards starting and stopping the writer thread

    # ------------------------------------------------------------------------------ reading
    async def consume(self, reader: asyncio.StreamReader) -> None:
        """Read a child's output until end of file, line by line, and record each line."""
        pending = bytearray()  # the current line, up to max_line_bytes
        cut = 0  # bytes of the current line beyond max_line_bytes
        while True:
            chunk = await reader.read(_READ_CHUNK)
            if not chunk:
                break
            self._write_file(chunk)
            start = 0
            while True:
                newline = chunk.find(b"\n", start)
                end = len(chunk) if newline < 0 else newline
                room = self._max_line_bytes - len(pending)
                piece = chunk[start:end]
                if room > 0:
                    pending += piece[:room]
                cut += max(0, len(piece) - max(room, 0))
                if newline < 0:
                    break
                self._record(bytes(pending), cut)
                pending.clear()
                cut = 0
                start = newline + 1
        if pending or cut:
            self._record(bytes(pending), cut)

    def feed_line(self, line: str) -> None:
        """Record one line as if the child had written it (for output not read from a pipe)."""
        encoded = line.encode("utf-8", "replace")
        self._write_file(encoded + b"\n")
        self._record(encoded[: self._max_line_bytes], max(0, len(encoded) - self._max_line_bytes))

    def note(self, text: str) -> None:
        """Write a launcher note (a restart, an exit code) into the log file only."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._write_file(f"[gymfleet {stamp}] {text}\n".encode("utf-8", "replace"), note=True)

    def last_lines(self, n: int = 20) -> list[str]:
        """The last ``n`` lines the child wrote (fewer if it wrote fewer), oldest first."""
        if n <= 0:
            return []
        return list(self._ring)[-n:]

    # ------------------------------------------------------------------------------ lifecycle
    async def flush(self, timeout_s: float = 2.0) -> bool:
        """Wait until the sink has been given every queued line (and any "lines dropped" note).

        Returns:
            True if the queue drained within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            if self._dropped and self._report_dropped():
                self._ensure_writer()
            if not self._queue.unfinished_tasks and not self._dropped:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)

    def close(self, timeout_s: float = 1.0) -> None:
        """Close the log file and stop the writer thread (lines still queued get ``timeout_s``).

        A closed log can be used again; the file and the thread are reopened on the next line.
        """
        with self._lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                self._writer_stop.set()
                writer.join(timeout_s)
                if writer.is_alive():
                    logger.warning("output writer for %s did not finish within %.1f s", self.name, timeout_s)
                self._writer_stop = threading.Event()
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    # ------------------------------------------------------------------------------ internals
    def _record(self, raw: bytes, cut: int) -> None:
        text = _CONTROL_CHARS.sub("\ufffd", raw.decode("utf-8", "replace").rstrip("\r"))
        if cut:
            text += f" ... [{cut} more bytes, see the log file]"
        self._ring.append(text)
        if not self.quiet:
            self._show(self._prefix + text)

    def _show(self, text: str) -> None:
        self._ensure_writer()
        if not self._report_dropped():
            self._dropped += 1
            return
        try:
            self._queue.put_nowait(text)
        except queue.Full:
            self._dropped += 1

    def _report_dropped(self) -> bool:
        """Queue the "lines not shown" note if lines were dropped; False if the queue is still full."""
        if not self._dropped:
            return True
        where = self.path or "the last lines kept in memory only (no log_dir set)"
        note = (
            f"{self._prefix}[gymfleet: {self._dropped} lines not shown because the terminal was too slow; "
            f"all output is in {where}]"
        )
        try:
            self._queue.put_nowait(note)
        except queue.Full:
            return False
        self._dropped = 0
        return True

    def _ensure_writer(self) -> None:
        if self._writer is not None:
            return
        with self._lock:
            if self._writer is None:
                thread = threading.Thread(
                    target=self._drain,
                    args=(self._writer_stop,),
                    name=f"gymfleet-log-{self.name}",
                    daemon=True,
                )
                thread.start()
                self._writer = thread

    def _drain(self, stop: threading.Event) -> None:
        while True:
            try:
                text = self._queue.get(timeout=_WRITER_POLL_S)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            try:
                self._sink(text)
            except Exception:  # a broken sink must not kill the thread and block the queue
                logger.exception("output sink for %s failed", self.name)
            finally:
                self._queue.task_done()

    def _write_file(self, data: bytes, *, note: bool = False) -> None:
        if self.path is None:
            return
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "ab", buffering=0)  # kept open across calls
            if note and not self._file_at_line_start:
                data = b"\n" + data
            self._file.write(data)
        except OSError as exc:
            # Keep serving: the terminal and the ring buffer still work without the file.
            logger.error(
                "cannot write log file %s for %s: %s; continuing without it", self.path, self.name, exc
            )
            self.path = None
            return
        self._file_at_line_start = data.endswith(b"\n")
