"""ProcessLog: prefixes, the per-server file, the ring buffer, long lines, junk and slow sinks."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gymfleet.launcher.logs import ProcessLog, log_file_name
from tests.launcher.launcher_helpers import Cleanup


async def feed(log: ProcessLog, *chunks: bytes) -> None:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    await asyncio.wait_for(log.consume(reader), 5)


async def test_lines_are_prefixed_on_the_sink(cleanup: Cleanup) -> None:
    shown: list[str] = []
    log = cleanup.log(ProcessLog("srv", sink=shown.append))
    await feed(log, b"hello\nwor", b"ld\r\n", b"no newline at the end")
    assert await log.flush(2)
    assert shown == ["(srv) hello", "(srv) world", "(srv) no newline at the end"]


async def test_file_gets_raw_bytes_and_sanitised_name(tmp_path: Path, cleanup: Cleanup) -> None:
    log = cleanup.log(ProcessLog("agents/simple agent", log_dir=tmp_path / "logs", quiet=True))
    await feed(log, b"one\n", b"\xff binary\x00 two\n")
    log.note("restarting in 0.5 s")
    log.close()
    path = tmp_path / "logs" / "agents_simple_agent.log"
    assert log.path == path
    content = path.read_bytes()
    assert content.startswith(b"one\n\xff binary\x00 two\n[gymfleet ")
    assert content.endswith(b"restarting in 0.5 s\n")
    assert log_file_name("../etc/passwd") == "_etc_passwd.log"


async def test_file_is_appended_and_reopened_after_close(tmp_path: Path, cleanup: Cleanup) -> None:
    (tmp_path / "srv.log").write_bytes(b"earlier run\n")
    log = cleanup.log(ProcessLog("srv", log_dir=tmp_path, quiet=True))
    await feed(log, b"first\n")
    log.close()
    log.feed_line("second")
    log.close()
    assert (tmp_path / "srv.log").read_bytes() == b"earlier run\nfirst\nsecond\n"


async def test_ring_buffer_keeps_the_last_lines(cleanup: Cleanup) -> None:
    log = cleanup.log(ProcessLog("srv", quiet=True, ring_size=5))
    await feed(log, b"".join(f"line {n}\n".encode() for n in range(12)))
    assert log.last_lines(3) == ["line 9", "line 10", "line 11"]
    assert log.last_lines() == [f"line {n}" for n in range(7, 12)]
    assert log.last_lines(0) == []


async def test_long_lines_are_cut_in_memory_but_whole_in_the_file(tmp_path: Path, cleanup: Cleanup) -> None:
    shown: list[str] = []
    log = cleanup.log(ProcessLog("srv", log_dir=tmp_path, sink=shown.append, max_line_bytes=100))
    huge = b"x" * 1_000_000
    await feed(log, huge[:300_000], huge[300_000:] + b"\nnext\n")
    assert await log.flush(2)
    first, second = log.last_lines()
    assert first.startswith("x" * 100) and "[999900 more bytes" in first
    assert second == "next"
    assert shown[0] == "(srv) " + first
    log.close()
    assert (tmp_path / "srv.log").read_bytes() == huge + b"\nnext\n"


async def test_binary_junk_is_made_printable(cleanup: Cleanup) -> None:
    log = cleanup.log(ProcessLog("srv", quiet=True))
    await feed(log, b"\x00\x01\xff\xfe ok \x1b[1mbold\x1b[0m\ttab\x07\n")
    (line,) = log.last_lines()
    assert line == "\ufffd\ufffd\ufffd\ufffd ok \x1b[1mbold\x1b[0m\ttab\ufffd"


async def test_quiet_shows_nothing_but_keeps_lines(cleanup: Cleanup) -> None:
    shown: list[str] = []
    log = cleanup.log(ProcessLog("srv", sink=shown.append, quiet=True))
    await feed(log, b"a\nb\n")
    assert await log.flush(1)
    assert shown == [] and log.last_lines() == ["a", "b"]


async def test_slow_sink_never_blocks_reading_and_reports_dropped_lines(
    tmp_path: Path, cleanup: Cleanup
) -> None:
    shown: list[str] = []

    def slow_sink(text: str) -> None:
        time.sleep(0.02)
        shown.append(text)

    log = cleanup.log(ProcessLog("srv", log_dir=tmp_path, sink=slow_sink, queue_size=5, ring_size=500))
    started = time.monotonic()
    await feed(log, b"".join(f"line {n}\n".encode() for n in range(300)))
    assert time.monotonic() - started < 2.0, "a slow sink must not slow down reading"
    assert len(log.last_lines(500)) == 300
    assert await log.flush(3)
    assert len(shown) < 300
    dropped_note = shown[-1]
    assert "lines not shown because the terminal was too slow" in dropped_note
    assert str(tmp_path / "srv.log") in dropped_note
    log.close()
    assert (tmp_path / "srv.log").read_bytes().count(b"\n") == 300


async def test_a_failing_sink_does_not_stop_the_log(cleanup: Cleanup) -> None:
    def broken(text: str) -> None:
        raise OSError("terminal gone")

    log = cleanup.log(ProcessLog("srv", sink=broken))
    await feed(log, b"a\nb\n")
    assert await log.flush(2)
    assert log.last_lines() == ["a", "b"]
