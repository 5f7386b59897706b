"""Resume: state from the output files only, torn lines, attempt counts, identity, move-aside."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from gymfleet.errors import ResumeMismatchError, RolloutError, UpstreamTimeoutError
from gymfleet.rollouts import OutputPaths, RolloutCollector, load_resume_state
from gymfleet.rollouts.resume import RunLock

from .helpers import ScriptedAgent, keys, make_config, make_rows, read_jsonl, verify_response, write_jsonl


async def _collect(tmp_path: Path, agent: ScriptedAgent | None = None, **overrides: Any) -> Any:
    config = make_config(tmp_path, **overrides)
    return await RolloutCollector(config, agent or ScriptedAgent()).run(handle_signals=False)


def _paths(tmp_path: Path) -> OutputPaths:
    return OutputPaths.from_output(make_config(tmp_path).output_jsonl_fpath)


async def test_deleted_rows_are_collected_again_and_kept_rows_are_not(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(20))
    await _collect(tmp_path, num_repeats=2)
    paths = _paths(tmp_path)
    lines = paths.output.read_bytes().splitlines(keepends=True)
    kept = lines[::3]
    paths.output.write_bytes(b"".join(kept))

    agent = ScriptedAgent()
    summary = await _collect(tmp_path, agent, num_repeats=2, resume_from_cache=True)
    assert len(agent.calls) == 40 - len(kept)
    assert {k for k, _ in agent.calls}.isdisjoint(keys([orjson.loads(x) for x in kept]))
    rows = read_jsonl(paths.output)
    assert sorted(keys(rows)) == [(t, r) for t in range(20) for r in range(2)]
    assert summary.ok and summary.skipped_from_cache == len(kept)


async def test_torn_last_line_is_repaired_and_its_rollout_collected(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(5))
    await _collect(tmp_path)
    paths = _paths(tmp_path)
    lines = paths.output.read_bytes().splitlines(keepends=True)
    torn = lines[-1][: len(lines[-1]) // 2]
    paths.output.write_bytes(b"".join(lines[:-1]) + torn)
    lost_key = keys([orjson.loads(lines[-1])])[0]

    agent = ScriptedAgent()
    summary = await _collect(tmp_path, agent, resume_from_cache=True)
    assert [k for k, _ in agent.calls] == [lost_key]
    assert summary.ok
    assert sorted(keys(read_jsonl(paths.output))) == [(t, 0) for t in range(5)]


async def _always_times_out(row: dict[str, Any], attempt: int) -> dict[str, Any]:
    raise UpstreamTimeoutError("upstream too slow", server_name="agent")


async def test_attempt_counts_are_preserved_across_runs(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(4))
    summary = await _collect(tmp_path, ScriptedAgent(_always_times_out), max_attempts=2, max_failure_rate=1.0)
    assert summary.failed_by_class == {"timeout": 4}
    paths = _paths(tmp_path)
    assert {r["_ng_attempt_index"] for r in read_jsonl(paths.failures)} == {1}
    state = load_resume_state(paths)
    assert {k: h.attempts for k, h in state.failures.items()} == {(t, 0): 2 for t in range(4)}

    # Same budget: nothing is dispatched, the failures are reported from the files.
    agent = ScriptedAgent()
    summary = await _collect(tmp_path, agent, max_attempts=2, resume_from_cache=True)
    assert agent.calls == [] and summary.failed_by_class == {"timeout": 4} and summary.skipped_from_cache == 4

    # A bigger budget continues the attempt count where the files left it.
    agent = ScriptedAgent()
    summary = await _collect(tmp_path, agent, max_attempts=3, resume_from_cache=True)
    assert sorted(agent.calls) == [((t, 0), 2) for t in range(4)]
    assert summary.succeeded == 4 and summary.failed == 0 and summary.ok
    assert {r["_ng_attempt_index"] for r in read_jsonl(paths.output)} == {2}


async def test_terminal_failures_are_never_retried(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(2))

    async def terminal_for_task_0(row: dict[str, Any], attempt: int) -> dict[str, Any]:
        if row["_ng_task_index"] == 0:
            return {**verify_response(row), "_ng_failure_class": "judge_failed", "_ng_failure_terminal": True}
        return verify_response(row)

    await _collect(tmp_path, ScriptedAgent(terminal_for_task_0), max_failure_rate=1.0)
    agent = ScriptedAgent()
    summary = await _collect(tmp_path, agent, resume_from_cache=True, max_attempts=10)
    assert agent.calls == []
    assert summary.failed_by_class == {"judge_failed": 1} and summary.succeeded == 1


async def test_resume_refuses_a_changed_run_unless_forced(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(3))
    await _collect(tmp_path)

    with pytest.raises(ResumeMismatchError, match=r"num_repeats: 1 -> 2.*\+force_resume=true"):
        await _collect(tmp_path, num_repeats=2, resume_from_cache=True)

    with open(tmp_path / "input.jsonl", "ab") as f:
        f.write(orjson.dumps({"responses_create_params": {"input": "new"}}) + b"\n")
    with pytest.raises(ResumeMismatchError, match="input_sha256"):
        await _collect(tmp_path, resume_from_cache=True)

    agent = ScriptedAgent()
    summary = await _collect(tmp_path, agent, resume_from_cache=True, force_resume=True)
    assert [k for k, _ in agent.calls] == [(3, 0)] and summary.ok
    # The header now describes the forced run, so the next plain resume is accepted.
    summary = await _collect(tmp_path, resume_from_cache=True)
    assert summary.ok and summary.skipped_from_cache == 4


async def test_resume_without_a_run_header_is_refused(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(2))
    await _collect(tmp_path)
    _paths(tmp_path).run_header.unlink()
    with pytest.raises(ResumeMismatchError, match="missing"):
        await _collect(tmp_path, resume_from_cache=True)


async def test_resume_without_outputs_starts_fresh(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(2))
    summary = await _collect(tmp_path, resume_from_cache=True)
    assert summary.ok and summary.skipped_from_cache == 0


async def test_without_resume_old_files_are_moved_aside_not_deleted(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(3))
    await _collect(tmp_path)
    paths = _paths(tmp_path)
    before = paths.output.read_bytes()
    agent = ScriptedAgent()
    await _collect(tmp_path, agent)
    assert len(agent.calls) == 3
    moved = sorted(p.name for p in paths.output.parent.iterdir() if p.name.startswith("rollouts.jsonl."))
    assert len(moved) == 1 and (paths.output.parent / moved[0]).read_bytes() == before
    assert any(p.name.startswith("rollouts_run.json.") for p in paths.output.parent.iterdir())


def test_two_collectors_cannot_share_an_output(tmp_path: Path) -> None:
    first = RunLock(tmp_path / "x_run.lock")
    first.acquire()
    try:
        with pytest.raises(RolloutError, match="Another collector"):
            RunLock(tmp_path / "x_run.lock").acquire()
    finally:
        first.release()
    second = RunLock(tmp_path / "x_run.lock")
    second.acquire()
    second.release()


def test_unreadable_lines_in_the_middle_are_skipped_with_a_warning(tmp_path: Path) -> None:
    paths = OutputPaths.from_output(tmp_path / "r.jsonl")
    paths.output.write_bytes(b'{"_ng_task_index": 0, "_ng_rollout_index": 0}\ngarbage\n{"no": "key"}\n')
    paths.failures.write_bytes(
        b'{"_ng_task_index": 1, "_ng_rollout_index": 0, "_ng_failure_class": "timeout"}\n'
        b'{"_ng_task_index": 1, "_ng_rollout_index": 0, "_ng_failure_class": "model_error"}\n'
    )
    state = load_resume_state(paths)
    assert state.done == {(0, 0)} and state.unreadable_lines == 2
    history = state.failures[(1, 0)]
    assert (history.attempts, history.terminal, history.last_class) == (2, False, "model_error")
