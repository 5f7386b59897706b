"""Progress: counters, the quiet log line, the rich display."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from rich.console import Console

from gymfleet.rollouts import LogProgress, ProgressSnapshot, RichProgress, RolloutCollector, make_progress

from .helpers import ScriptedAgent, make_config, make_rows, write_jsonl


def test_snapshot_rate_and_eta() -> None:
    snap = ProgressSnapshot(
        expected=100,
        succeeded=40,
        failed_by_class={"timeout": 10},
        in_flight=8,
        retried=3,
        finished_this_run=25,
        elapsed_s=5.0,
    )
    assert snap.done == 50 and snap.rollouts_per_s == 5.0 and snap.eta_s == 10.0
    line = snap.line()
    assert (
        "50/100 (50.0%)" in line and "timeout=10" in line and "in flight 8" in line and "ETA 0:00:10" in line
    )


def test_quiet_mode_logs_lines_and_never_uses_a_live_display() -> None:
    assert isinstance(make_progress(quiet=True), LogProgress)


async def test_quiet_collection_logs_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(5))
    config = make_config(tmp_path, progress_log_interval_s=0.0)
    with caplog.at_level(logging.INFO, logger="gymfleet.rollouts.progress"):
        await RolloutCollector(config, ScriptedAgent()).run(handle_signals=False)
    assert "finished: 5/5 (100.0%) rollouts" in caplog.text


def test_rich_display_shows_counts() -> None:
    buffer = io.StringIO()
    progress = RichProgress(console=Console(file=buffer, force_terminal=True, width=200))
    snap = ProgressSnapshot(expected=10, succeeded=4, failed_by_class={"rate_limited": 1}, elapsed_s=1.0)
    progress.start(snap)
    progress.close(snap)
    shown = buffer.getvalue()
    assert "5/10" in shown and "rate_limited=1" in shown
