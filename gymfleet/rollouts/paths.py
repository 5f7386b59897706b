"""The files one collection run owns, all derived from the output path.

For ``--output out/rollouts.jsonl`` the stem is ``out/rollouts`` and the run owns::

    out/rollouts.jsonl                         successes, one line per rollout
    out/rollouts_failures.jsonl                final failures, one line per failed outcome
    out/rollouts_materialized_inputs.jsonl     every row the run expects, as dispatched
    out/rollouts_run.json                      run identity (fingerprint) for resume
    out/rollouts_aggregate_metrics.json        aggregate metrics over successes
    out/rollouts_run.lock                      held while a collector writes these files
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OutputPaths", "atomic_write_bytes"]


@dataclass(frozen=True)
class OutputPaths:
    """Paths of every file a collection run reads or writes."""

    output: Path
    failures: Path
    materialized_inputs: Path
    run_header: Path
    aggregate_metrics: Path
    lock: Path

    @classmethod
    def from_output(cls, output_jsonl_fpath: str | os.PathLike[str]) -> OutputPaths:
        """Derive every sibling path from the success output path."""
        output = Path(output_jsonl_fpath)
        stem = output.with_suffix("") if output.suffix else output

        def sibling(suffix: str) -> Path:
            return stem.parent / f"{stem.name}{suffix}"

        return cls(
            output=output,
            failures=sibling("_failures.jsonl"),
            materialized_inputs=sibling("_materialized_inputs.jsonl"),
            run_header=sibling("_run.json"),
            aggregate_metrics=sibling("_aggregate_metrics.json"),
            lock=sibling("_run.lock"),
        )

    def data_files(self) -> list[Path]:
        """The files a fresh run moves aside (everything except the lock)."""
        return [
            self.output,
            self.failures,
            self.materialized_inputs,
            self.run_header,
            self.aggregate_metrics,
        ]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
