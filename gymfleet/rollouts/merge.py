"""Merge the outputs of sharded collection runs into one file and recompute aggregate metrics.

Shard ``i`` of ``n`` collects the rows with ``_ng_task_index % n == i`` into its own output.
Merging keeps the first line of each ``(_ng_task_index, _ng_rollout_index)`` key, carries over
failure lines of keys that never succeeded, and writes the merged aggregate metrics.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gymfleet.errors import RolloutError
from gymfleet.rollouts.aggregate import dump_entries, load_successes, metrics_entry
from gymfleet.rollouts.metrics import aggregate_metrics
from gymfleet.rollouts.paths import OutputPaths, atomic_write_bytes
from gymfleet.rollouts.resume import iter_jsonl, row_key
from gymfleet.rollouts.writer import JsonlAppender

__all__ = ["merge_rollouts"]

logger = logging.getLogger("gymfleet.rollouts")

_DERIVED = ("_failures.jsonl", "_materialized_inputs.jsonl")


def _resolve_inputs(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], output: Path
) -> list[Path]:
    patterns = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    found: list[Path] = []
    for pattern in patterns:
        text = os.fspath(pattern)
        if any(c in text for c in "*?["):
            matches = [Path(p) for p in sorted(glob.glob(text)) if not p.endswith(_DERIVED)]
        else:
            matches = [Path(text)]
        for path in matches:
            if path.resolve() == output.resolve():
                continue
            if not path.is_file():
                raise RolloutError(f"Shard output '{path}' does not exist; check the paths given to merge")
            if path not in found:
                found.append(path)
    if not found:
        raise RolloutError(f"No shard outputs match {inputs!r}; pass the shards' output_jsonl_fpath files")
    return found


class _Replacing:
    """Write a JSONL file next to ``target`` and move it into place only when complete."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.tmp = target.with_name(f".{target.name}.merging-{os.getpid()}")

    def __enter__(self) -> JsonlAppender:
        self.out = JsonlAppender(self.tmp, truncate=True)
        return self.out

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.out.close()
        if exc_type is None:
            os.replace(self.tmp, self.target)
        else:
            self.tmp.unlink(missing_ok=True)


def merge_rollouts(
    input_glob_or_paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output_path: str | os.PathLike[str],
) -> dict[str, Any]:
    """Merge shard outputs into ``output_path`` (first line per key wins) and write its metrics.

    Args:
        input_glob_or_paths: A glob (``"out/shard_*.jsonl"``; failure and materialized files it
            matches are skipped) or a list of output paths.
        output_path: The merged success output; ``<stem>_failures.jsonl`` and
            ``<stem>_aggregate_metrics.json`` are written next to it.

    Returns:
        ``{"inputs", "output_jsonl_fpath", "failures_jsonl_fpath", "aggregate_metrics_fpath",
        "num_rollouts", "num_duplicates", "num_unreadable_lines", "num_failure_lines",
        "aggregate_metrics"}``.
    """
    paths = OutputPaths.from_output(output_path)
    inputs = _resolve_inputs(input_glob_or_paths, paths.output)
    seen: set[tuple[int, int]] = set()
    duplicates = unreadable = num_failure_lines = 0
    with _Replacing(paths.output) as out:
        for path in inputs:
            for line_no, row in iter_jsonl(path):
                key = row_key(row) if row is not None else None
                if row is None or key is None:
                    unreadable += 1
                    logger.warning(
                        "%s:%d is not a rollout row (torn or foreign line); skipped", path, line_no
                    )
                    continue
                if key in seen:
                    duplicates += 1
                    continue
                seen.add(key)
                out.write(row)
    with _Replacing(paths.failures) as out:
        for path in inputs:
            for _, row in iter_jsonl(OutputPaths.from_output(path).failures):
                key = row_key(row) if row is not None else None
                if row is not None and key is not None and key not in seen:
                    out.write(row)
                    num_failure_lines += 1

    by_agent = load_successes(paths.output)
    entries = [metrics_entry(agent, aggregate_metrics(by_agent[agent])) for agent in sorted(by_agent)]
    atomic_write_bytes(paths.aggregate_metrics, dump_entries(entries))
    logger.info(
        "merged %d shard outputs into %s: %d rollouts, %d duplicates dropped, %d unreadable lines skipped",
        len(inputs),
        paths.output,
        len(seen),
        duplicates,
        unreadable,
    )
    return {
        "inputs": [str(p) for p in inputs],
        "output_jsonl_fpath": str(paths.output),
        "failures_jsonl_fpath": str(paths.failures),
        "aggregate_metrics_fpath": str(paths.aggregate_metrics),
        "num_rollouts": len(seen),
        "num_duplicates": duplicates,
        "num_unreadable_lines": unreadable,
        "num_failure_lines": num_failure_lines,
        "aggregate_metrics": entries,
    }
