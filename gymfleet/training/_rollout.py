"""``TrainingRollout``: one finished rollout as a trainer needs it (reward, group, policy version, tokens)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TokenTurn", "TrainingRollout", "token_turns"]


@dataclass(frozen=True)
class TokenTurn:
    """Token data of one model call: the prompt it saw, what it generated, and the logprobs of that."""

    prompt_token_ids: list[int]
    generation_token_ids: list[int]
    generation_log_probs: list[float]


def token_turns(output: Any) -> list[TokenTurn]:
    """Token data of every output item that has some (``return_token_id_information`` model servers)."""
    turns: list[TokenTurn] = []
    if not isinstance(output, list):
        return turns
    for item in output:
        if isinstance(item, dict) and isinstance(item.get("generation_token_ids"), list):
            turns.append(
                TokenTurn(
                    prompt_token_ids=list(item.get("prompt_token_ids") or []),
                    generation_token_ids=list(item["generation_token_ids"]),
                    generation_log_probs=list(item.get("generation_log_probs") or []),
                )
            )
    return turns


@dataclass(frozen=True)
class TrainingRollout:
    """One rollout of a submitted batch, final: either a reward or a typed failure (never a fake reward 0).

    Attributes:
        group_id: The group (one submitted prompt) this rollout belongs to.
        policy_version: The tag the trainer gave the batch.
        task_index: Index of the prompt in the batch (``_ng_task_index``).
        rollout_index: Index within the group, ``0..group_size-1`` (``_ng_rollout_index``).
        ok: True when the rollout finished with a reward.
        reward: The verifier's reward; None when the rollout failed.
        failure_class: On failure, the collector's class (``model_error``, ``timeout``, ...).
        failure_message: On failure, what went wrong.
        turns: Token data per model call, in order (empty when the model server returns none).
        row: The full line the collector wrote (success or failure record), with ``group_id`` and
            ``policy_version`` added.
    """

    group_id: str
    policy_version: int | str | None
    task_index: int
    rollout_index: int
    ok: bool
    reward: float | None
    failure_class: str | None = None
    failure_message: str | None = None
    turns: list[TokenTurn] = field(default_factory=list)
    row: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def prompt_token_ids(self) -> list[int]:
        """The prompt of the first model call."""
        return self.turns[0].prompt_token_ids if self.turns else []

    @property
    def generation_token_ids(self) -> list[int]:
        """Generated tokens of every model call, concatenated."""
        return [t for turn in self.turns for t in turn.generation_token_ids]

    @property
    def generation_log_probs(self) -> list[float]:
        """Logprobs of :attr:`generation_token_ids`."""
        return [p for turn in self.turns for p in turn.generation_log_probs]
