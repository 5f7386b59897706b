"""Resume state, derived only from a run's own output files, and the run identity that guards it.

* done: keys with a line in the success output;
* attempts: per key, from the failures file (``_ng_attempt_index`` of its lines, else one per line);
* terminal: keys whose failure line says ``_ng_failure_terminal``.

A run writes ``<stem>_run.json`` at start. Resuming against files whose identity differs (another
input file, agent, repeats, limit, overrides, shard) is refused unless forced. A fresh run never
deletes earlier files: it renames them with a timestamp suffix.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gymfleet.errors import ResumeMismatchError, RolloutError
from gymfleet.rollouts.paths import OutputPaths, atomic_write_bytes
from gymfleet.rollouts.writer import repair_torn_tail

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS; locking is then best effort
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FailureHistory",
    "ResumeState",
    "RunLock",
    "iter_jsonl",
    "load_resume_state",
    "prepare_outputs",
    "row_key",
]

logger = logging.getLogger("gymfleet.rollouts")

Key = tuple[int, int]
IDENTITY_VERSION = 1


@dataclass
class FailureHistory:
    """What the failures file says about one key."""

    attempts: int = 0
    terminal: bool = False
    last_class: str = "unknown"


@dataclass
class ResumeState:
    """Everything resume needs, read from the output files."""

    done: set[Key] = field(default_factory=set)
    failures: dict[Key, FailureHistory] = field(default_factory=dict)
    unreadable_lines: int = 0


def row_key(row: dict[str, Any]) -> Key | None:
    """The ``(_ng_task_index, _ng_rollout_index)`` of a row, or ``None`` if it has none."""
    task, rollout = row.get("_ng_task_index"), row.get("_ng_rollout_index")
    if isinstance(task, int) and isinstance(rollout, int) and not isinstance(task, bool):
        return task, rollout
    return None


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """Yield ``(line number, object or None when unreadable)`` for each non-empty line of ``path``."""
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                yield line_no, None
                continue
            yield line_no, obj if isinstance(obj, dict) else None


def load_resume_state(paths: OutputPaths) -> ResumeState:
    """Repair torn tails, then read the success and failure files into a :class:`ResumeState`."""
    state = ResumeState()
    for path in (paths.output, paths.failures):
        repair_torn_tail(path)
    for line_no, row in iter_jsonl(paths.output):
        key = row_key(row) if row is not None else None
        if key is None:
            state.unreadable_lines += 1
            logger.warning(
                "%s:%d is not a rollout row with task/rollout indices; ignored", paths.output, line_no
            )
            continue
        state.done.add(key)
    for line_no, row in iter_jsonl(paths.failures):
        key = row_key(row) if row is not None else None
        if row is None or key is None:
            state.unreadable_lines += 1
            logger.warning(
                "%s:%d is not a failure row with task/rollout indices; ignored", paths.failures, line_no
            )
            continue
        history = state.failures.setdefault(key, FailureHistory())
        index = row.get("_ng_attempt_index")
        counted = (
            index + 1 if isinstance(index, int) and not isinstance(index, bool) else history.attempts + 1
        )
        history.attempts = max(history.attempts, counted)
        history.terminal = history.terminal or bool(row.get("_ng_failure_terminal"))
        history.last_class = str(row.get("_ng_failure_class") or "unknown")
    return state


class RunLock:
    """An exclusive lock on an output path, so two collectors never write the same files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RolloutError(
                    f"Another collector (pid {holder}) is writing to the files next to {self.path}; "
                    "wait for it to finish, stop it, or choose another +output_jsonl_fpath"
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _has_lines(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _move_aside(paths: OutputPaths) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for path in paths.data_files():
        if not path.exists():
            continue
        target = path.with_name(f"{path.name}.{stamp}")
        counter = 1
        while target.exists():
            target = path.with_name(f"{path.name}.{stamp}-{counter}")
            counter += 1
        os.replace(path, target)
        logger.warning("%s existed and resume is off: moved it to %s", path, target)


def _describe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    changes = []
    for key in sorted(set(old) | set(new)):
        if key in ("created_at", "input_jsonl_fpath"):
            continue
        if old.get(key) != new.get(key):
            changes.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return changes


def prepare_outputs(
    paths: OutputPaths, identity: dict[str, Any], *, resume: bool, force: bool
) -> ResumeState:
    """Get the output files ready for a run and return what is already settled.

    Without ``resume``, existing files are moved aside. With it, the stored identity must match
    ``identity`` (unless ``force``), torn tails are repaired and state is read back.
    """
    has_results = _has_lines(paths.output) or _has_lines(paths.failures)
    header = {"version": IDENTITY_VERSION, **identity, "created_at": time.time()}
    if not resume:
        if any(p.exists() for p in paths.data_files()):
            _move_aside(paths)
        atomic_write_bytes(paths.run_header, orjson.dumps(header, option=orjson.OPT_INDENT_2))
        return ResumeState()
    if not has_results:
        logger.info("resume requested but %s has no rollouts yet: starting from the beginning", paths.output)
        atomic_write_bytes(paths.run_header, orjson.dumps(header, option=orjson.OPT_INDENT_2))
        return ResumeState()
    try:
        stored = orjson.loads(paths.run_header.read_bytes())
    except FileNotFoundError:
        stored = None
    except orjson.JSONDecodeError:
        stored = {"unreadable": str(paths.run_header)}
    if not isinstance(stored, dict):
        problem = [f"{paths.run_header} is missing, so the files cannot be tied to this input and config"]
    else:
        problem = _describe_changes({k: v for k, v in stored.items() if k != "version"}, identity)
    if problem:
        detail = "; ".join(problem)
        if not force:
            raise ResumeMismatchError(
                f"Refusing to resume into {paths.output}: the run changed ({detail}). Resume with the "
                "original input and settings, start fresh without +resume_from_cache, or pass "
                "+force_resume=true to append to these files anyway."
            )
        logger.warning("force_resume: resuming into %s although the run changed (%s)", paths.output, detail)
    atomic_write_bytes(paths.run_header, orjson.dumps(header, option=orjson.OPT_INDENT_2))
    state = load_resume_state(paths)
    logger.info(
        "resuming %s: %d rollouts done, %d keys with failures",
        paths.output,
        len(state.done),
        len(state.failures),
    )
    return state
