"""Group statistics and GRPO advantages."""

from __future__ import annotations

import math

import pytest

from gymfleet.training import Group, TokenTurn, TrainingRollout, group_advantages, group_stats, token_turns


def test_stats_and_advantages() -> None:
    stats = group_stats([1.0, 0.0, 1.0, 0.0])
    assert (stats.count, stats.mean, stats.std, stats.min, stats.max) == (4, 0.5, 0.5, 0.0, 1.0)
    adv = group_advantages([1.0, 0.0, 1.0, 0.0])
    assert adv == pytest.approx([1.0, -1.0, 1.0, -1.0], abs=1e-4)
    assert group_advantages([1.0, 1.0]) == [0.0, 0.0]  # no signal in a uniform group
    assert group_advantages([2.0, 0.0], normalize_std=False) == [1.0, -1.0]
    assert group_stats([]).count == 0


def test_group_ignores_failures_in_rewards() -> None:
    def rollout(i: int, reward: float | None) -> TrainingRollout:
        return TrainingRollout("g", 3, 0, i, ok=reward is not None, reward=reward,
                               failure_class=None if reward is not None else "model_error")

    group = Group("g", 0, 3, [rollout(0, 1.0), rollout(1, None), rollout(2, 0.0)])
    assert group.rewards == [1.0, 0.0] and group.stats.failed == 1
    assert math.isclose(group.stats.mean, 0.5) and len(group.advantages()) == 2


def test_token_turns_from_output_items() -> None:
    output = [
        {"type": "function_call", "prompt_token_ids": [1], "generation_token_ids": [2, 3],
         "generation_log_probs": [-0.1, -0.2]},
        {"type": "function_call_output", "output": "x"},
        {"type": "message", "prompt_token_ids": [1, 2, 3, 4], "generation_token_ids": [5],
         "generation_log_probs": [-0.5]},
    ]
    turns = token_turns(output)
    assert turns == [TokenTurn([1], [2, 3], [-0.1, -0.2]), TokenTurn([1, 2, 3, 4], [5], [-0.5])]
    r = TrainingRollout("g", 1, 0, 0, ok=True, reward=1.0, turns=turns)
    assert r.prompt_token_ids == [1] and r.generation_token_ids == [2, 3, 5]
    assert r.generation_log_probs == [-0.1, -0.2, -0.5]
    assert token_turns(None) == []
