"""aggregate_metrics: the /aggregate_metrics body shape and its statistics."""

from __future__ import annotations

import statistics

import pytest

from gymfleet.rollouts import aggregate_metrics, strip_for_metrics


def _row(task: int, rollout: int, reward: float, *, tokens: int = 10, solved: bool = False) -> dict:
    return {
        "_ng_task_index": task,
        "_ng_rollout_index": rollout,
        "agent_ref": {"name": "agent"},
        "responses_create_params": {"input": f"task {task}"},
        "response": {"output": ["big"], "usage": {"input_tokens": tokens, "output_tokens": 2 * tokens}},
        "reward": reward,
        "solved": solved,
        "expected_answer": "42",
    }


def test_strip_keeps_only_usage_of_the_response() -> None:
    stripped = strip_for_metrics(_row(0, 0, 1.0))
    assert "responses_create_params" not in stripped
    assert stripped["response"] == {"usage": {"input_tokens": 10, "output_tokens": 20}}
    assert stripped["reward"] == 1.0 and stripped["expected_answer"] == "42"


def test_shape_and_statistics() -> None:
    rows = [
        _row(0, 0, 1.0, tokens=10, solved=True),
        _row(0, 1, 0.0, tokens=20),
        _row(1, 0, 0.5, tokens=30),
    ]
    result = aggregate_metrics(rows, expected_num_rollouts=2)
    assert set(result) == {"group_level_metrics", "agent_metrics", "key_metrics"}

    agent = result["agent_metrics"]
    assert agent["num_rollouts"] == 3 and agent["num_tasks"] == 2
    assert agent["mean/reward"] == pytest.approx(0.5)
    assert agent["max/reward"] == 1.0 and agent["min/reward"] == 0.0 and agent["median/reward"] == 0.5
    assert agent["std/reward"] == pytest.approx(statistics.stdev([1.0, 0.0, 0.5]))
    assert agent["mean/input_tokens"] == 20.0 and agent["max/output_tokens"] == 60.0
    assert agent["mean/solved"] == pytest.approx(1 / 3)  # booleans count as 0/1
    assert not any("_ng_" in k for k in agent)
    assert result["key_metrics"] == {k: v for k, v in agent.items() if k.startswith("mean/")}

    first, second = result["group_level_metrics"]
    assert first["_ng_task_index"] == 0 and first["num_rollouts"] == 2
    assert first["mean/reward"] == 0.5 and first["std/reward"] == pytest.approx(statistics.stdev([1.0, 0.0]))
    assert first["sample"]["expected_answer"] == "42" and "responses_create_params" not in first["sample"]
    assert [info["reward"] for info in first["rollout_infos"]] == [1.0, 0.0]
    assert second["num_rollouts"] == 1 and second["std/reward"] == 0.0
    assert (second["expected_num_rollouts"], second["missing_num_rollouts"]) == (2, 1)
    assert second["reward_profile_completion_pct"] == 50.0


def test_empty_input() -> None:
    assert aggregate_metrics([]) == {
        "group_level_metrics": [],
        "agent_metrics": {"num_rollouts": 0, "num_tasks": 0},
        "key_metrics": {},
    }
