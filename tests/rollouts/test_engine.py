"""The collector: one outcome per rollout, retries, deadlines, abort, bounds, backpressure, stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest

from gymfleet.errors import UpstreamConnectError, UpstreamStatusError, UpstreamTimeoutError
from gymfleet.rollouts import CollectionAbortedError, OutputPaths, RolloutCollector, RolloutFailure

from .helpers import ScriptedAgent, keys, make_config, make_rows, read_jsonl, verify_response, write_jsonl


async def test_every_rollout_succeeds_and_every_file_is_written(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(10))
    config = make_config(tmp_path, num_repeats=3)
    agent = ScriptedAgent()
    summary = await RolloutCollector(config, agent).run(handle_signals=False)

    paths = OutputPaths.from_output(config.output_jsonl_fpath)
    rows = read_jsonl(paths.output)
    expected = {(t, r) for t in range(10) for r in range(3)}
    assert sorted(keys(rows)) == sorted(expected)
    assert all(row["agent_ref"] == {"name": "agent"} and row["reward"] == 1.0 for row in rows)
    assert "_ng_attempt_index" not in rows[0]
    assert read_jsonl(paths.failures) == []
    assert set(keys(read_jsonl(paths.materialized_inputs))) == expected
    assert summary.ok and summary.expected == 30 and summary.succeeded == 30 and summary.missing == 0
    assert summary.key_metrics == {
        "agent": {
            "mean/reward": 1.0,
            "mean/expected": 4.5,
            "mean/input_tokens": 10.0,
            "mean/output_tokens": 4.0,
        }
    }
    aggregate = orjson.loads(paths.aggregate_metrics.read_bytes())
    assert [entry["agent_ref"] for entry in aggregate] == [{"name": "agent"}]
    assert set(aggregate[0]) == {"agent_ref", "agent_metrics", "key_metrics", "group_level_metrics"}
    assert len(aggregate[0]["group_level_metrics"]) == 10
    assert orjson.loads(paths.run_header.read_bytes())["num_repeats"] == 3


async def _scheduled(row: dict[str, Any], attempt: int) -> dict[str, Any]:
    """Task index mod 8 picks how this rollout behaves."""
    kind = row["_ng_task_index"] % 8
    if kind == 0 and attempt == 0:
        raise UpstreamConnectError("connection refused", server_name="agent", url="http://127.0.0.1:9/run")
    if kind == 1:
        raise UpstreamTimeoutError("no answer", server_name="agent")
    if kind == 2:
        raise UpstreamStatusError("bad request", status=422, body={"error": {"type": "validation"}})
    if kind == 3:
        return {"response": {}, "score": 1}
    if kind == 4 and attempt < 2:
        raise RolloutFailure("slow down", failure_class="rate_limited", retryable=True, status=429)
    if kind == 5:
        return {
            **verify_response(row, 0.0),
            "_ng_failure_class": "judge_failed",
            "_ng_failure_terminal": True,
        }
    if kind == 6:
        raise RuntimeError("a bug in the dispatch path")
    return verify_response(row, reward=0.5)


async def test_each_rollout_ends_as_exactly_one_success_or_one_typed_failure(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(40))
    config = make_config(tmp_path, num_repeats=2, max_failure_rate=1.0, num_samples_in_parallel=7)
    agent = ScriptedAgent(_scheduled)
    summary = await RolloutCollector(config, agent).run(handle_signals=False)

    paths = OutputPaths.from_output(config.output_jsonl_fpath)
    ok, failed = read_jsonl(paths.output), read_jsonl(paths.failures)
    expected = {(t, r) for t in range(40) for r in range(2)}
    assert len(keys(ok)) == len(set(keys(ok))) and len(keys(failed)) == len(set(keys(failed)))
    assert set(keys(ok)) | set(keys(failed)) == expected
    assert not set(keys(ok)) & set(keys(failed))

    by_kind: dict[int, set[str]] = {}
    for row in failed:
        by_kind.setdefault(row["_ng_task_index"] % 8, set()).add(row["_ng_failure_class"])
    assert by_kind == {
        1: {"timeout"},
        2: {"agent_error"},
        3: {"invalid_response"},
        5: {"judge_failed"},
        6: {"agent_error"},
    }
    for row in failed:
        kind = row["_ng_task_index"] % 8
        assert row["_ng_attempt_index"] == (2 if kind == 1 else 0)
        assert row["_ng_failure_attempts"] == (3 if kind == 1 else 1)
        assert row["_ng_failure_terminal"] is (kind in (2, 5))
        assert row["responses_create_params"]["input"].startswith("question")
        assert row["_ng_failure_message"] and row["_ng_failure_at"] >= row["_ng_failure_started_at"]
    assert all(r["_ng_failure_server"] == "agent" for r in failed if r["_ng_task_index"] % 8 == 1)
    assert {r["_ng_failure_status"] for r in failed if r["_ng_task_index"] % 8 == 2} == {422}
    # Retried rollouts that later succeeded are successes only, stamped with their attempt.
    retried_ok = {
        r["_ng_task_index"] % 8: r.get("_ng_attempt_index") for r in ok if r["_ng_task_index"] % 8 in (0, 4)
    }
    assert retried_ok == {0: 1, 4: 2}
    assert all(r["reward"] == 0.5 for r in ok)

    per_kind = 10  # 5 tasks of each kind, 2 rollouts each
    assert summary.failed_by_class == {
        "timeout": per_kind,
        "agent_error": 2 * per_kind,
        "invalid_response": per_kind,
        "judge_failed": per_kind,
    }
    assert summary.succeeded == 3 * per_kind and summary.missing == 0 and not summary.ok
    assert summary.retried == per_kind * 1 + per_kind * 2 + per_kind * 2  # connect, rate limit, timeout
    assert max(agent.attempts.values()) == 3
    assert summary.key_metrics["agent"]["mean/reward"] == 0.5  # failures never enter reward stats


async def test_per_rollout_deadline(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(3))

    async def hang_on_task_1(row: dict[str, Any], attempt: int) -> dict[str, Any]:
        if row["_ng_task_index"] == 1:
            await asyncio.sleep(60)
        return verify_response(row)

    config = make_config(tmp_path, rollout_timeout_s=0.2, max_attempts=2)
    started = time.monotonic()
    summary = await RolloutCollector(config, ScriptedAgent(hang_on_task_1)).run(handle_signals=False)
    assert time.monotonic() - started < 3
    assert summary.failed_by_class == {"timeout": 1} and summary.succeeded == 2
    (failure,) = read_jsonl(OutputPaths.from_output(config.output_jsonl_fpath).failures)
    assert "rollout_timeout_s=0.2" in failure["_ng_failure_message"]
    assert failure["_ng_failure_attempts"] == 2


async def test_failure_rate_aborts_early_and_resume_collects_the_rest(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(300))

    async def model_down(row: dict[str, Any], attempt: int) -> dict[str, Any]:
        raise UpstreamStatusError(
            "bad gateway",
            status=502,
            body={"error": {"type": "upstream_status", "upstream_server_type": "responses_api_models"}},
        )

    config = make_config(tmp_path, num_samples_in_parallel=4, max_attempts=1)
    agent = ScriptedAgent(model_down)
    with pytest.raises(CollectionAbortedError, match="max_failure_rate=0.5") as info:
        await RolloutCollector(config, agent).run(handle_signals=False)
    summary = info.value.summary
    assert summary.failed_by_class["model_error"] >= 20
    assert summary.missing > 200 and len(agent.calls) < 60
    assert summary.expected == 300 == summary.succeeded + summary.failed + summary.missing
    assert "resume_from_cache" in str(info.value)

    # Failures were final for that run (max_attempts=1); a resume with more attempts retries them.
    config = make_config(tmp_path, num_samples_in_parallel=4, max_attempts=2, resume_from_cache=True)
    summary = await RolloutCollector(config, ScriptedAgent()).run(handle_signals=False)
    paths = OutputPaths.from_output(config.output_jsonl_fpath)
    assert summary.succeeded == 300 and summary.failed == 0
    assert sorted(keys(read_jsonl(paths.output))) == [(t, 0) for t in range(300)]


async def test_in_flight_is_bounded(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(100))
    agent = ScriptedAgent(delay_s=0.005)
    config = make_config(tmp_path, num_samples_in_parallel=5)
    summary = await RolloutCollector(config, agent).run(handle_signals=False)
    assert summary.ok
    assert agent.max_in_flight == 5


async def test_a_slow_consumer_pauses_admission(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(500))
    agent = ScriptedAgent()
    config = make_config(tmp_path, num_samples_in_parallel=4)
    collector = RolloutCollector(config, agent)
    consumed = 0
    async with contextlib.aclosing(collector.iterate()) as results:
        async for result in results:
            assert result.ok and result.attempts == 1
            consumed += 1
            await asyncio.sleep(0.05)
            if consumed == 3:
                # result queue (4) + slots (4) bound what ran ahead of the consumer
                assert len(agent.calls) <= consumed + 4 + 4 + 1
                assert collector.reader is not None and collector.reader.lines_read <= consumed + 10
                break
    # Every rollout that finished was written before it was handed over, and nothing else was.
    written = read_jsonl(OutputPaths.from_output(config.output_jsonl_fpath).output)
    assert 3 <= len(written) <= len(agent.calls)
    assert (
        collector.summary is not None and collector.summary.stopped_reason == "the consumer stopped iterating"
    )


async def test_large_input_is_streamed_not_loaded(tmp_path: Path) -> None:
    filler = "x" * 200
    path = tmp_path / "input.jsonl"
    path.write_text(
        "".join(f'{{"responses_create_params": {{"input": "q{i} {filler}"}}}}\n' for i in range(100_000))
    )
    file_size = path.stat().st_size
    assert file_size > 20_000_000
    config = make_config(tmp_path, num_samples_in_parallel=16)
    collector = RolloutCollector(config, ScriptedAgent())
    consumed = 0
    try:
        async with contextlib.aclosing(collector.iterate()) as results:
            async for _ in results:
                consumed += 1
                if consumed == 1:
                    # The identity/validation pass is done; trace the steady state from here on.
                    tracemalloc.start()
                if consumed == 300:
                    break
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert collector.reader is not None
    assert 300 <= collector.reader.lines_read <= 300 + 2 * 16 + 2
    assert peak < file_size / 10, f"peak {peak} bytes for a {file_size}-byte input"


async def test_request_stop_writes_nothing_for_unfinished_rollouts(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(30))

    async def slow_after_ten(row: dict[str, Any], attempt: int) -> dict[str, Any]:
        if row["_ng_task_index"] >= 10:
            await asyncio.sleep(60)
        return verify_response(row)

    config = make_config(tmp_path, num_samples_in_parallel=4, stop_grace_s=0.2)
    collector = RolloutCollector(config, ScriptedAgent(slow_after_ten))
    finished = 0
    started = time.monotonic()
    async for _ in collector:
        finished += 1
        if finished == 10:
            collector.request_stop("test stop")
    assert time.monotonic() - started < 5
    summary = collector.summary
    assert summary is not None and summary.stopped_reason == "test stop"
    assert (summary.succeeded, summary.failed, summary.missing) == (10, 0, 20)
    assert summary.aggregate_metrics_fpath is None
    paths = OutputPaths.from_output(config.output_jsonl_fpath)
    assert len(read_jsonl(paths.output)) == 10 and read_jsonl(paths.failures) == []

    resumed = make_config(tmp_path, num_samples_in_parallel=4, resume_from_cache=True)
    agent = ScriptedAgent()
    summary = await RolloutCollector(resumed, agent).run(handle_signals=False)
    assert summary.ok and summary.skipped_from_cache == 10 and len(agent.calls) == 20
    assert sorted(keys(read_jsonl(paths.output))) == [(t, 0) for t in range(30)]


async def test_cancelling_the_run_drops_in_flight_work_at_once(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(10))
    agent = ScriptedAgent(delay_s=60)
    config = make_config(tmp_path, stop_grace_s=30)
    task = asyncio.create_task(RolloutCollector(config, agent).run(handle_signals=False))
    while len(agent.calls) < 10:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 2
    paths = OutputPaths.from_output(config.output_jsonl_fpath)
    assert read_jsonl(paths.output) == [] and read_jsonl(paths.failures) == []


async def test_retry_after_is_honoured(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(1))

    async def limited_once(row: dict[str, Any], attempt: int) -> dict[str, Any]:
        if attempt == 0:
            raise RolloutFailure("429", failure_class="rate_limited", retryable=True, retry_after_s=0.3)
        return verify_response(row)

    agent = ScriptedAgent(limited_once)
    started = time.monotonic()
    summary = await RolloutCollector(make_config(tmp_path), agent).run(handle_signals=False)
    assert summary.ok and summary.retried == 1
    assert time.monotonic() - started >= 0.3


async def test_skip_invalid_rows_records_them_once(tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    path.write_text('{"responses_create_params": {}}\n{broken\n{"responses_create_params": {}}\n')
    config = make_config(tmp_path, skip_invalid_rows=True)
    summary = await RolloutCollector(config, ScriptedAgent()).run(handle_signals=False)
    assert summary.failed_by_class == {"invalid_row": 1} and summary.succeeded == 2
    paths = OutputPaths.from_output(config.output_jsonl_fpath)
    (failure,) = read_jsonl(paths.failures)
    assert failure["_ng_failure_terminal"] is True and failure["_ng_input_line"] == 2
    assert "input.jsonl:2" in failure["_ng_failure_message"]

    agent = ScriptedAgent()
    resumed = make_config(tmp_path, skip_invalid_rows=True, resume_from_cache=True)
    summary = await RolloutCollector(resumed, agent).run(handle_signals=False)
    assert agent.calls == [] and summary.failed_by_class == {"invalid_row": 1}
    assert len(read_jsonl(paths.failures)) == 1


async def test_a_collector_runs_once(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(1))
    collector = RolloutCollector(make_config(tmp_path), ScriptedAgent())
    await collector.run(handle_signals=False)
    with pytest.raises(Exception, match="runs once"):
        await collector.run(handle_signals=False)


async def test_rollouts_waiting_to_retry_stop_at_once_and_write_nothing(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(5))

    async def refused(row: dict[str, Any], attempt: int) -> dict[str, Any]:
        raise UpstreamConnectError("connection refused", server_name="agent")

    agent = ScriptedAgent(refused)
    config = make_config(tmp_path, retry_backoff_base_s=30, retry_backoff_max_s=30, stop_grace_s=30)
    collector = RolloutCollector(config, agent)
    task = asyncio.create_task(collector.run(handle_signals=False))
    try:
        for _ in range(500):
            if len(agent.calls) == 5:
                break
            await asyncio.sleep(0.01)
        collector.request_stop("test stop")
        summary = await asyncio.wait_for(task, timeout=5)
    finally:
        task.cancel()
    assert (summary.missing, summary.failed, summary.retried) == (5, 0, 5)
    assert read_jsonl(OutputPaths.from_output(config.output_jsonl_fpath).failures) == []


async def test_sigint_stops_gracefully_and_the_previous_handler_comes_back(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(200))
    before = signal.getsignal(signal.SIGINT)
    sent = False

    async def interrupt_after_twenty(row: dict[str, Any], attempt: int) -> dict[str, Any]:
        nonlocal sent
        await asyncio.sleep(0.005)
        if row["_ng_task_index"] >= 20 and not sent:
            sent = True
            os.kill(os.getpid(), signal.SIGINT)
        return verify_response(row)

    config = make_config(tmp_path, num_samples_in_parallel=4, stop_grace_s=5)
    summary = await RolloutCollector(config, ScriptedAgent(interrupt_after_twenty)).run()
    assert summary.stopped_reason == "received SIGINT"
    assert 20 <= summary.succeeded < 200 and summary.failed == 0
    assert summary.succeeded + summary.missing == 200
    assert signal.getsignal(signal.SIGINT) is before
