"""What a collection run hands back: one ``RolloutResult`` per finished rollout, one summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from gymfleet.errors import RolloutError

__all__ = ["CollectionAbortedError", "CollectionSummary", "RolloutResult"]


@dataclass
class RolloutResult:
    """One rollout that reached its final outcome in this run.

    ``row`` is exactly the line written: the stamped agent answer on success, the failure record
    (input row plus ``_ng_failure_*`` fields) on failure. ``attempts`` counts dispatches in this run.
    """

    row: dict[str, Any]
    ok: bool
    failure_class: str | None
    attempts: int

    @property
    def key(self) -> tuple[int, int]:
        return int(self.row["_ng_task_index"]), int(self.row["_ng_rollout_index"])


@dataclass
class CollectionSummary:
    """The accounting of one run over its output files.

    ``expected == succeeded + sum(failed_by_class.values()) + missing`` always holds.
    ``succeeded`` and ``failed_by_class`` include outcomes found in the files at resume
    (``skipped_from_cache`` of them); ``missing`` are rollouts with no final outcome yet
    (stopped, aborted): a resumed run collects them.
    """

    expected: int
    succeeded: int
    failed_by_class: dict[str, int]
    retried: int
    skipped_from_cache: int
    missing: int
    wall_s: float
    rollouts_per_s: float
    key_metrics: dict[str, dict[str, float]]
    output_jsonl_fpath: str
    failures_jsonl_fpath: str
    materialized_inputs_jsonl_fpath: str
    aggregate_metrics_fpath: str | None
    run_header_fpath: str
    stopped_reason: str | None = None
    finished_this_run: int = 0
    notes: list[str] = field(default_factory=list)
    first_dispatch_at: float | None = None  # unix time of the first rollout sent in this run
    last_outcome_at: float | None = None  # unix time of the last outcome written in this run

    @property
    def failed(self) -> int:
        return sum(self.failed_by_class.values())

    @property
    def ok(self) -> bool:
        """True when every expected rollout succeeded."""
        return self.missing == 0 and self.failed == 0 and self.succeeded == self.expected

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["failed"] = self.failed
        out["ok"] = self.ok
        return out

    def format(self) -> str:
        """A few human-readable lines for the end of a CLI run."""
        failures = ", ".join(f"{k}={v}" for k, v in sorted(self.failed_by_class.items())) or "none"
        lines = [
            f"Rollouts: {self.succeeded}/{self.expected} succeeded, {self.failed} failed ({failures}), "
            f"{self.missing} missing; {self.retried} retries; "
            f"{self.skipped_from_cache} settled before this run",
            f"Time: {self.wall_s:.1f}s, {self.rollouts_per_s:.2f} rollouts/s",
        ]
        if self.stopped_reason:
            lines.append(f"Stopped early: {self.stopped_reason}. Resume with +resume_from_cache=true.")
        for agent, metrics in sorted(self.key_metrics.items()):
            shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
            lines.append(f"Key metrics for {agent}: {shown}")
        lines.append(f"Rollouts: {self.output_jsonl_fpath}")
        lines.append(f"Failures: {self.failures_jsonl_fpath}")
        lines.append(f"Fully materialized inputs: {self.materialized_inputs_jsonl_fpath}")
        if self.aggregate_metrics_fpath:
            lines.append(f"Aggregate metrics: {self.aggregate_metrics_fpath}")
        lines.extend(self.notes)
        return "\n".join(lines)


class CollectionAbortedError(RolloutError):
    """The run stopped itself: too many failures. Carries the summary of what was written."""

    def __init__(self, message: str, *, summary: CollectionSummary) -> None:
        super().__init__(message)
        self.summary = summary
