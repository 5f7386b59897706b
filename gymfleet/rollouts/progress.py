"""Progress of a collection run: a live rich display on a terminal, log lines otherwise.

The collector calls ``update`` about once per ``progress_interval_s`` and on every finished
rollout; implementations throttle themselves. Nothing here writes to stdout (it carries data).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LogProgress", "Progress", "ProgressSnapshot", "RichProgress", "make_progress"]

logger = logging.getLogger("gymfleet.rollouts.progress")


@dataclass
class ProgressSnapshot:
    """Counters of a running collection."""

    expected: int = 0
    succeeded: int = 0
    failed_by_class: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    retried: int = 0
    skipped_from_cache: int = 0
    finished_this_run: int = 0
    elapsed_s: float = 0.0

    @property
    def done(self) -> int:
        return self.succeeded + sum(self.failed_by_class.values())

    @property
    def rollouts_per_s(self) -> float:
        return self.finished_this_run / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        rate = self.rollouts_per_s
        return (self.expected - self.done) / rate if rate > 0 else None

    def line(self) -> str:
        eta = self.eta_s
        failures = ", ".join(f"{k}={v}" for k, v in sorted(self.failed_by_class.items())) or "0"
        pct = 100.0 * self.done / self.expected if self.expected else 100.0
        return (
            f"{self.done}/{self.expected} ({pct:.1f}%) rollouts, {self.rollouts_per_s:.2f}/s, "
            f"ETA {_fmt_s(eta)}, in flight {self.in_flight}, failures {failures}, retries {self.retried}"
        )


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Base class: receives snapshots. Override ``update`` (and ``start``/``close`` if needed)."""

    def start(self, snapshot: ProgressSnapshot) -> None:
        self.update(snapshot)

    def update(self, snapshot: ProgressSnapshot) -> None:
        """Show ``snapshot``; may ignore calls that come too soon after the last one."""

    def close(self, snapshot: ProgressSnapshot) -> None:
        self.update(snapshot)


class LogProgress(Progress):
    """Log one line at most every ``interval_s`` seconds (for log files and CI)."""

    def __init__(self, interval_s: float = 30.0) -> None:
        self.interval_s = interval_s
        self._last = float("-inf")

    def update(self, snapshot: ProgressSnapshot) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            logger.info("collecting: %s", snapshot.line())

    def close(self, snapshot: ProgressSnapshot) -> None:
        logger.info("finished: %s", snapshot.line())


class RichProgress(Progress):
    """A live progress bar with rate, ETA, in-flight count and failures by class.

    Args:
        console: A ``rich.console.Console``; by default one on stderr (stdout carries data).
    """

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichBar

        self._bar: Any = RichBar(
            TextColumn("Collecting rollouts"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"),
            console=console if console is not None else Console(stderr=True),
            auto_refresh=False,
        )
        self._task: Any = None
        self._last = float("-inf")

    def start(self, snapshot: ProgressSnapshot) -> None:
        self._bar.start()
        self._task = self._bar.add_task("rollouts", total=snapshot.expected, detail="")
        self.update(snapshot)

    def update(self, snapshot: ProgressSnapshot) -> None:
        now = time.monotonic()
        if self._task is None or now - self._last < 0.1:
            return
        self._last = now
        failures = ", ".join(f"{k}={v}" for k, v in sorted(snapshot.failed_by_class.items())) or "0"
        detail = (
            f"{snapshot.rollouts_per_s:.2f}/s ETA {_fmt_s(snapshot.eta_s)} in flight {snapshot.in_flight} "
            f"failures {failures} retries {snapshot.retried}"
        )
        self._bar.update(self._task, total=snapshot.expected, completed=snapshot.done, detail=detail)
        self._bar.refresh()

    def close(self, snapshot: ProgressSnapshot) -> None:
        self._last = float("-inf")
        self.update(snapshot)
        self._bar.stop()


def make_progress(*, quiet: bool, interval_s: float = 30.0) -> Progress:
    """A rich display when stderr is a terminal and not ``quiet``; periodic log lines otherwise."""
    if not quiet and sys.stderr.isatty():
        return RichProgress()
    return LogProgress(interval_s=interval_s)
