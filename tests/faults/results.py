"""Record what each fault scenario measured: one JSON line per scenario in a results file.

The file is ``$GYMFLEET_FAULT_RESULTS`` (default: ``<tmp>/gymfleet-fault-results.jsonl``); ``python -m
tests.faults.run_suite`` sets it, runs the suite and turns the lines into the summary table.

A test builds a :class:`Scenario`, adds what it observed (numbers) and the checks that decide pass/fail, then calls
:meth:`Scenario.finish`, which writes the line and fails the test with every failed check named.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RESULTS_ENV", "Scenario", "read_results", "results_path"]

RESULTS_ENV = "GYMFLEET_FAULT_RESULTS"


def results_path() -> Path:
    """Where scenario lines go (``$GYMFLEET_FAULT_RESULTS`` or a file in the temp directory)."""
    value = os.environ.get(RESULTS_ENV, "").strip()
    return Path(value) if value else Path(tempfile.gettempdir()) / "gymfleet-fault-results.jsonl"


def read_results(path: Path | None = None) -> list[dict[str, Any]]:
    """Every complete line of a results file (a torn last line is skipped)."""
    path = path or results_path()
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
    return value


@dataclass
class Scenario:
    """One failure mode (``mode`` 1..15 of the pain-point list), possibly one of several variants of it."""

    mode: int
    name: str
    expected: str
    observed: dict[str, Any] = field(default_factory=dict)
    checks: list[tuple[str, bool]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: bool = False

    def observe(self, **values: Any) -> None:
        """Add measured values (seconds, counts, percentiles) to the record."""
        self.observed.update(values)

    def check(self, what: str, ok: bool) -> bool:
        """Add one pass/fail condition, described in words (``"rows lost == 0"``)."""
        self.checks.append((what, bool(ok)))
        return bool(ok)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(ok for _, ok in self.checks)

    def write(self, *, error: str | None = None) -> None:
        line = {
            "mode": self.mode,
            "scenario": self.name,
            "expected": self.expected,
            "observed": _round(self.observed),
            "checks": [{"check": what, "ok": ok} for what, ok in self.checks],
            "passed": self.passed and error is None,
            "wall_s": round(time.monotonic() - self.started, 2),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        if error:
            line["error"] = error[:2000]
        path = results_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:  # one write per line: lines from parallel runs never interleave
            fh.write(json.dumps(line, default=str) + "\n")

    def finish(self) -> None:
        """Write the record and fail the test when a check failed (naming each, with the observed values)."""
        self.finished = True
        self.write()
        failed = [what for what, ok in self.checks if not ok]
        assert self.checks, f"scenario {self.name!r} recorded no checks"
        assert not failed, f"scenario {self.name!r} failed: {failed}; observed {_round(self.observed)}"
