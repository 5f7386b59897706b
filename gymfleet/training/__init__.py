"""Training integration: the fleet as Ray actors inside a trainer's cluster, rollouts grouped for GRPO.

In the trainer (a Ray driver)::

    from gymfleet import training

    handle = training.start_fleet(config)                 # joins the trainer's cluster, no second one
    groups = await handle.grouped(prompts, agent="arithmetic_simple_agent", group_size=4, policy_version=step)
    for g in groups:
        g.stats.mean, g.advantages()
    handle.shutdown()

Ray is imported only by :func:`start_fleet` (``pip install 'gymfleet[ray]'``). See ``docs/training.md``.
"""

from gymfleet.training._groups import Group, GroupStats, group_advantages, group_stats
from gymfleet.training._handle import FleetHandle, TrainingFleetError, start_fleet
from gymfleet.training._rollout import TokenTurn, TrainingRollout, token_turns

__all__ = [
    "FleetHandle",
    "Group",
    "GroupStats",
    "TokenTurn",
    "TrainingFleetError",
    "TrainingRollout",
    "group_advantages",
    "group_stats",
    "start_fleet",
    "token_turns",
]
