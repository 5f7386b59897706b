"""Per-group reward statistics for group-relative policy optimisation (GRPO) and friends."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from gymfleet.training._rollout import TrainingRollout

__all__ = ["Group", "GroupStats", "group_advantages", "group_stats"]


@dataclass(frozen=True)
class GroupStats:
    """Rewards of one group's successful rollouts.

    ``std`` is the population standard deviation (GRPO's normaliser); ``failed`` counts rollouts that
    ended with a typed failure and carry no reward.
    """

    count: int
    failed: int
    mean: float
    std: float
    min: float
    max: float


def group_stats(rewards: Sequence[float], *, failed: int = 0) -> GroupStats:
    """Mean, std, min and max of ``rewards`` (all 0.0 when there are none)."""
    if not rewards:
        return GroupStats(count=0, failed=failed, mean=0.0, std=0.0, min=0.0, max=0.0)
    mean = sum(rewards) / len(rewards)
    var = sum((r - mean) ** 2 for r in rewards) / len(rewards)
    return GroupStats(
        count=len(rewards), failed=failed, mean=mean, std=math.sqrt(var), min=min(rewards), max=max(rewards)
    )


def group_advantages(
    rewards: Sequence[float], *, normalize_std: bool = True, eps: float = 1e-6
) -> list[float]:
    """GRPO advantages: ``(r - mean) / (std + eps)``, or ``r - mean`` without ``normalize_std``.

    A group whose rewards are all equal gets zero advantages (it teaches nothing).
    """
    stats = group_stats(rewards)
    if normalize_std:
        return [(r - stats.mean) / (stats.std + eps) for r in rewards]
    return [r - stats.mean for r in rewards]


@dataclass
class Group:
    """All rollouts of one prompt of a batch, in rollout-index order, with their reward statistics."""

    group_id: str
    task_index: int
    policy_version: int | str | None
    rollouts: list[TrainingRollout] = field(default_factory=list)

    @property
    def succeeded(self) -> list[TrainingRollout]:
        return [r for r in self.rollouts if r.ok]

    @property
    def rewards(self) -> list[float]:
        return [float(r.reward) for r in self.succeeded if r.reward is not None]

    @property
    def stats(self) -> GroupStats:
        return group_stats(self.rewards, failed=len(self.rollouts) - len(self.succeeded))

    def advantages(self, *, normalize_std: bool = True) -> list[float]:
        """One advantage per successful rollout (same order as :attr:`succeeded`)."""
        return group_advantages(self.rewards, normalize_std=normalize_std)
