"""Append-only JSONL: whole lines only, torn tails repaired, fsync policies."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gymfleet.rollouts import JsonlAppender, repair_torn_tail

from .helpers import read_jsonl


@pytest.mark.parametrize("fsync_interval_ms", [0.0, 50.0, -1.0])
def test_appends_one_line_per_record(tmp_path: Path, fsync_interval_ms: float) -> None:
    path = tmp_path / "sub" / "a.jsonl"
    with JsonlAppender(path, fsync_interval_ms=fsync_interval_ms) as out:
        for i in range(5):
            out.write({"i": i, "text": "line\nbreak"})
    with JsonlAppender(path, fsync_interval_ms=fsync_interval_ms) as out:
        out.write({"i": 5})
    assert [r["i"] for r in read_jsonl(path)] == [0, 1, 2, 3, 4, 5]
    assert path.read_bytes().count(b"\n") == 6


def test_truncate_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"old": 1}\n')
    with JsonlAppender(path, truncate=True) as out:
        out.write({"new": 1})
    assert read_jsonl(path) == [{"new": 1}]


def test_torn_tail_is_cut_back_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3, "tor')
    with caplog.at_level(logging.WARNING, logger="gymfleet.rollouts"):
        assert repair_torn_tail(path) == len(b'{"a": 3, "tor')
    assert "torn line" in caplog.text
    assert path.read_bytes() == b'{"a": 1}\n{"a": 2}\n'
    assert repair_torn_tail(path) == 0
    # Opening for append repairs too, so the next line never glues onto a fragment.
    path.write_bytes(b'{"a": 1}\n{"brok')
    with JsonlAppender(path) as out:
        out.write({"a": 2})
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]


def test_torn_tail_without_any_newline_empties_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"x" * 200_000)
    assert repair_torn_tail(path) == 200_000
    assert path.read_bytes() == b""


def test_values_json_cannot_hold_raise_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    with JsonlAppender(path) as out:
        with pytest.raises(TypeError):
            out.write({"x": object()})
        out.write({"x": 1})
    assert read_jsonl(path) == [{"x": 1}]
