"""``CollectionConfig``: every knob of one rollout collection run, validated once."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gymfleet.errors import ConfigError

__all__ = ["CollectionConfig"]

logger = logging.getLogger("gymfleet.rollouts")

_INT_FIELDS = (
    "limit",
    "num_samples_in_parallel",
    "max_attempts",
    "min_rows_for_failure_rate",
    "shard_index",
    "num_shards",
)
_FLOAT_FIELDS = (
    "rollout_timeout_s",
    "max_failure_rate",
    "retry_backoff_base_s",
    "retry_backoff_max_s",
    "stop_grace_s",
    "progress_interval_s",
    "progress_log_interval_s",
    "fsync_interval_ms",
)
_BOOL_FIELDS = (
    "resume_from_cache",
    "force_resume",
    "disable_aggregation",
    "quiet",
    "skip_invalid_rows",
)
DEFAULT_PARALLEL = 64


@dataclass(frozen=True)
class CollectionConfig:
    """One collection run. Key names match NeMo Gym's ``ng_collect_rollouts``.

    Args:
        agent_name: Agent used for rows without ``agent_ref``.
        input_jsonl_fpath: Input rows, one JSON object per line.
        output_jsonl_fpath: Successes; failures and metadata go next to it (see ``OutputPaths``).
        limit: Use only the first N non-empty input lines.
        num_repeats: Rollouts per row: an int, or ``{agent_name: k, "_default": k}``.
        num_samples_in_parallel: Most rollouts in flight at once.
        responses_create_params: Shallow-merged over each row's ``responses_create_params``.
        resume_from_cache: Continue the run whose files are at the output path.
        force_resume: Resume even though the run identity changed.
        max_attempts: Attempts per rollout, counted across resumed runs.
        rollout_timeout_s: Deadline of one attempt.
        max_failure_rate: Abort when more than this share of finished rollouts failed ...
        min_rows_for_failure_rate: ... once at least this many finished in this run.
        disable_aggregation: Skip the aggregate metrics file.
        quiet: No live display; log a progress line every ``progress_interval_s`` instead.
        shard_index: This process collects rows with ``_ng_task_index % num_shards == shard_index``.
        num_shards: Number of shards.
        skip_invalid_rows: Record broken input lines as ``invalid_row`` failures instead of stopping.
        retry_backoff_base_s: First retry waits about this long (exponential, capped, jittered).
        retry_backoff_max_s: Cap of one backoff wait.
        stop_grace_s: On stop, in-flight rollouts get this long to finish before they are dropped.
        progress_interval_s: How often the live display is refreshed.
        progress_log_interval_s: How often a progress line is logged without a live display.
        fsync_interval_ms: 0 fsyncs every row; N > 0 at most every N ms; a negative value never
            (lines still reach the OS at once, so a killed process loses nothing).
    """

    agent_name: str | None
    input_jsonl_fpath: str
    output_jsonl_fpath: str
    limit: int | None = None
    num_repeats: int | dict[str, int] = 1
    num_samples_in_parallel: int = DEFAULT_PARALLEL
    responses_create_params: dict[str, Any] = field(default_factory=dict)
    resume_from_cache: bool = False
    force_resume: bool = False
    max_attempts: int = 3
    rollout_timeout_s: float = 1800.0
    max_failure_rate: float = 0.5
    disable_aggregation: bool = False
    quiet: bool = False
    shard_index: int = 0
    num_shards: int = 1
    min_rows_for_failure_rate: int = 20
    skip_invalid_rows: bool = False
    retry_backoff_base_s: float = 1.0
    retry_backoff_max_s: float = 60.0
    stop_grace_s: float = 10.0
    progress_interval_s: float = 1.0
    progress_log_interval_s: float = 30.0
    fsync_interval_ms: float = 1000.0

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"Rollout collection config: '{key}' {why}", key=key)

        if not self.input_jsonl_fpath:
            raise bad("input_jsonl_fpath", "is required; pass +input_jsonl_fpath=<path to a JSONL file>")
        if not self.output_jsonl_fpath:
            raise bad("output_jsonl_fpath", "is required; pass +output_jsonl_fpath=<path to write>")
        if self.limit is not None and self.limit < 0:
            raise bad("limit", f"must be >= 0 or null, got {self.limit}")
        if isinstance(self.num_repeats, Mapping):
            for name, k in self.num_repeats.items():
                if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                    raise bad("num_repeats", f"entry '{name}' must be an int >= 1, got {k!r}")
        elif (
            isinstance(self.num_repeats, bool)
            or not isinstance(self.num_repeats, int)
            or self.num_repeats < 1
        ):
            raise bad("num_repeats", f"must be an int >= 1 or a dict by agent name, got {self.num_repeats!r}")
        if self.num_samples_in_parallel < 1:
            raise bad("num_samples_in_parallel", f"must be >= 1, got {self.num_samples_in_parallel}")
        if not isinstance(self.responses_create_params, Mapping):
            raise bad("responses_create_params", "must be a mapping of parameter overrides")
        if self.max_attempts < 1:
            raise bad("max_attempts", f"must be >= 1, got {self.max_attempts}")
        if not self.rollout_timeout_s > 0:
            raise bad("rollout_timeout_s", f"must be > 0, got {self.rollout_timeout_s}")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise bad("max_failure_rate", f"must be within [0, 1], got {self.max_failure_rate}")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise bad(
                "shard_index",
                f"must satisfy 0 <= shard_index < num_shards, got {self.shard_index} of {self.num_shards}",
            )

    def repeats_for(self, agent: str) -> int:
        """Number of rollouts per row for ``agent``."""
        if isinstance(self.num_repeats, int):
            return self.num_repeats
        if agent in self.num_repeats:
            return self.num_repeats[agent]
        if "_default" in self.num_repeats:
            return self.num_repeats["_default"]
        raise ConfigError(
            f"num_repeats has no entry for agent '{agent}' and no '_default'; "
            f"add ++num_repeats.{agent}=<k> or ++num_repeats._default=<k>",
            key="num_repeats",
        )

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> CollectionConfig:
        """Build from a resolved config mapping using NeMo Gym key names; unknown keys are ignored.

        ``num_samples_in_parallel: null`` means "unbounded" in NeMo Gym; gymfleet always bounds
        admission, so it becomes the default of 64.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        ignored = sorted(str(k) for k in m if k not in names)
        for key in names:
            if key not in m:
                continue
            value = _plain(m[key])
            try:
                if value is not None and key in _INT_FIELDS:
                    value = _to_int(value)
                elif value is not None and key in _FLOAT_FIELDS:
                    value = float(value)
                elif key in _BOOL_FIELDS:
                    value = _to_bool(value)
                elif key == "num_repeats" and not isinstance(value, dict):
                    value = _to_int(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"Rollout collection config: '{key}' has value {value!r}, which is not valid ({exc})",
                    key=key,
                ) from exc
            kwargs[key] = value
        if kwargs.get("num_samples_in_parallel", DEFAULT_PARALLEL) is None:
            logger.info("num_samples_in_parallel=null: using the bounded default of %d", DEFAULT_PARALLEL)
            kwargs["num_samples_in_parallel"] = DEFAULT_PARALLEL
        if kwargs.get("responses_create_params") is None:
            kwargs.pop("responses_create_params", None)
        kwargs.setdefault("agent_name", None)
        kwargs.setdefault("input_jsonl_fpath", "")
        kwargs.setdefault("output_jsonl_fpath", "")
        if ignored:
            logger.debug("rollout collection ignores config keys: %s", ", ".join(ignored))
        return cls(**kwargs)

    def identity(self) -> dict[str, Any]:
        """The config part of the run identity (the input's hash is added by the collector)."""
        return {
            "agent_name": self.agent_name,
            "num_repeats": self.num_repeats,
            "limit": self.limit,
            "responses_create_params": dict(self.responses_create_params),
            "shard_index": self.shard_index,
            "num_shards": self.num_shards,
        }


def _plain(value: Any) -> Any:
    """Turn mapping/sequence containers (e.g. OmegaConf nodes) into plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("a boolean is not an integer")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("not a whole number")
    return int(value)


def _to_bool(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", ""):
        return False
    if isinstance(value, int):
        return bool(value)
    raise ValueError("expected true or false")
