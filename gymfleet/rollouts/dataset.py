"""Read input JSONL lazily and turn each line into the rows a run dispatches.

One non-empty input line is one *task*. Its ``_ng_task_index`` is the 0-based count of non-empty
lines before it, unless the row carries its own. Each task is repeated ``num_repeats`` times
("aabbcc" order) with ``_ng_rollout_index`` 0..k-1, so a rollout's key is
``(_ng_task_index, _ng_rollout_index)``. Nothing here holds more than one line in memory, except
:func:`scan_dataset`'s bitmap of task indices (one bit per task) used to refuse duplicate keys.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from gymfleet.errors import ConfigFileNotFoundError, DatasetError
from gymfleet.rollouts.config import CollectionConfig

__all__ = ["DatasetReader", "DatasetScan", "WorkItem", "scan_dataset"]

logger = logging.getLogger("gymfleet.rollouts")

TASK_INDEX = "_ng_task_index"
ROLLOUT_INDEX = "_ng_rollout_index"
_CHUNK = 1 << 20


@dataclass
class WorkItem:
    """One rollout to run (or, with ``skip_invalid_rows``, one broken line to record)."""

    key: tuple[int, int]
    row: dict[str, Any]
    line: int
    invalid: str | None = None


@dataclass
class _Parsed:
    line: int
    task_index: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    invalid: str | None = None


@dataclass(frozen=True)
class DatasetScan:
    """What one full pass over the input found."""

    sha256: str
    expected: int
    tasks: int
    invalid_rows: int


class _Invalid(Exception):
    def __init__(self, why: str, task_index: int | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.task_index = task_index


def _open(path: Path) -> IO[bytes]:
    try:
        return open(path, "rb")
    except FileNotFoundError as exc:
        raise ConfigFileNotFoundError(
            f"Input JSONL '{path}' does not exist; check +input_jsonl_fpath", path=str(path)
        ) from exc


def _parse_lines(
    lines: Iterator[tuple[int, bytes]], config: CollectionConfig, path: Path
) -> Iterator[_Parsed]:
    """Yield one ``_Parsed`` per non-empty line, up to ``limit``; raise on a broken line unless skipping."""
    position = 0
    for line_no, raw in lines:
        if not raw.strip():
            continue
        if config.limit is not None and position >= config.limit:
            return
        try:
            task_index, rows = _materialize(raw, position, config)
            yield _Parsed(line=line_no, task_index=task_index, rows=rows)
        except _Invalid as bad:
            if not config.skip_invalid_rows:
                raise DatasetError(
                    f"{path}:{line_no}: {bad.why}. Fix or remove the line, or pass "
                    "+skip_invalid_rows=true to record it as an 'invalid_row' failure.",
                    path=str(path),
                    line=line_no,
                ) from None
            task_index = position if bad.task_index is None else bad.task_index
            yield _Parsed(line=line_no, task_index=task_index, invalid=bad.why)
        position += 1


def _materialize(raw: bytes, position: int, config: CollectionConfig) -> tuple[int, list[dict[str, Any]]]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Invalid(f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise _Invalid(f"a row must be a JSON object, got {type(obj).__name__}")
    explicit = obj.get(TASK_INDEX)
    if explicit is not None and (isinstance(explicit, bool) or not isinstance(explicit, int) or explicit < 0):
        raise _Invalid(f"'{TASK_INDEX}' must be an int >= 0, got {explicit!r}")
    task_index = position if explicit is None else explicit
    params = obj.get("responses_create_params")
    if not isinstance(params, dict):
        raise _Invalid("the row has no 'responses_create_params' object", task_index)
    agent_ref = obj.get("agent_ref")
    if agent_ref is None:
        if not config.agent_name:
            raise _Invalid("the row has no 'agent_ref' and no +agent_name was given", task_index)
        agent_ref = {"name": config.agent_name}
    if not isinstance(agent_ref, dict) or not isinstance(agent_ref.get("name"), str) or not agent_ref["name"]:
        raise _Invalid(
            f"'agent_ref' must be an object with a non-empty 'name', got {agent_ref!r}", task_index
        )
    obj["agent_ref"] = agent_ref
    if config.responses_create_params:
        params = {**params, **config.responses_create_params}
    repeats = config.repeats_for(agent_ref["name"])
    rows = []
    for rollout_index in range(repeats):
        row = dict(obj)
        row["responses_create_params"] = dict(params)
        row[TASK_INDEX] = task_index
        row[ROLLOUT_INDEX] = rollout_index
        rows.append(row)
    return task_index, rows


class DatasetReader:
    """Iterate the rollouts of one shard of an input file, reading one line at a time.

    ``lines_read`` tells how far into the file the reader is, so callers (and tests) can check
    that admission, not the file size, bounds what is in memory.
    """

    def __init__(self, path: str | Path, config: CollectionConfig) -> None:
        self.path = Path(path)
        self.config = config
        self.lines_read = 0

    def _numbered(self, fh: IO[bytes]) -> Iterator[tuple[int, bytes]]:
        for raw in fh:
            self.lines_read += 1
            yield self.lines_read, raw

    def __iter__(self) -> Iterator[WorkItem]:
        shards, shard = self.config.num_shards, self.config.shard_index
        with _open(self.path) as fh:
            for parsed in _parse_lines(self._numbered(fh), self.config, self.path):
                if parsed.task_index % shards != shard:
                    continue
                if parsed.invalid is not None:
                    stub = {
                        TASK_INDEX: parsed.task_index,
                        ROLLOUT_INDEX: 0,
                        "_ng_input_line": parsed.line,
                    }
                    yield WorkItem((parsed.task_index, 0), stub, parsed.line, parsed.invalid)
                    continue
                for row in parsed.rows:
                    yield WorkItem((parsed.task_index, row[ROLLOUT_INDEX]), row, parsed.line)


class _IndexSet:
    """Task indices seen so far: a bitmap for the usual dense 0..N range, a set beyond it."""

    _DENSE_LIMIT = 1 << 27  # 16 MiB of bitmap at most

    def __init__(self) -> None:
        self._bits = bytearray()
        self._sparse: set[int] = set()

    def add(self, index: int) -> bool:
        """Add ``index``; False if it was already there."""
        if index >= self._DENSE_LIMIT:
            if index in self._sparse:
                return False
            self._sparse.add(index)
            return True
        byte, bit = divmod(index, 8)
        if byte >= len(self._bits):
            self._bits.extend(bytes(max(byte + 1 - len(self._bits), len(self._bits))))
        if self._bits[byte] >> bit & 1:
            return False
        self._bits[byte] |= 1 << bit
        return True


def scan_dataset(path: str | Path, config: CollectionConfig) -> DatasetScan:
    """One streaming pass: hash every byte, validate every used line, count expected rollouts.

    Runs before anything is dispatched, so a broken line 90,000 stops the run in seconds rather
    than hours in, and the summary can state exactly how many rollouts were expected.
    """
    path = Path(path)
    digest = hashlib.sha256()
    seen = _IndexSet()
    expected = tasks = invalid = 0

    def hashed(fh: IO[bytes]) -> Iterator[tuple[int, bytes]]:
        for line_no, raw in enumerate(fh, start=1):
            digest.update(raw)
            yield line_no, raw

    with _open(path) as fh:
        for parsed in _parse_lines(hashed(fh), config, path):
            if not seen.add(parsed.task_index):
                raise DatasetError(
                    f"{path}:{parsed.line}: {TASK_INDEX} {parsed.task_index} is used by an earlier line too; "
                    "every input row needs a distinct task index (drop the explicit indices to number "
                    "rows by line)",
                    path=str(path),
                    line=parsed.line,
                )
            if parsed.task_index % config.num_shards != config.shard_index:
                continue
            tasks += 1
            if parsed.invalid is not None:
                invalid += 1
                expected += 1
            else:
                expected += len(parsed.rows)
        # ``limit`` may have stopped parsing early; the identity still covers the whole file.
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return DatasetScan(sha256=digest.hexdigest(), expected=expected, tasks=tasks, invalid_rows=invalid)
