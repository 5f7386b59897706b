"""Sharded collection and merging the shard outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from gymfleet.errors import RolloutError
from gymfleet.rollouts import OutputPaths, RolloutCollector, merge_rollouts

from .helpers import ScriptedAgent, keys, make_config, make_rows, read_jsonl, verify_response, write_jsonl


async def test_shards_cover_the_dataset_and_merge_into_one_output(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "input.jsonl", make_rows(25))

    async def fail_task_7(row: dict, attempt: int) -> dict:
        if row["_ng_task_index"] == 7:
            return {"no_reward": True}
        return verify_response(row, reward=row["_ng_task_index"] % 2)

    outputs = []
    for shard in range(3):
        output = tmp_path / "shards" / f"shard{shard}.jsonl"
        config = make_config(
            tmp_path,
            output_jsonl_fpath=str(output),
            num_shards=3,
            shard_index=shard,
            num_repeats=2,
            disable_aggregation=True,
            max_failure_rate=1.0,
        )
        summary = await RolloutCollector(config, ScriptedAgent(fail_task_7)).run(handle_signals=False)
        assert summary.aggregate_metrics_fpath is None
        assert all(k[0] % 3 == shard for k in keys(read_jsonl(output)))
        outputs.append(output)

    # A copied shard shows that duplicates are dropped (first line wins).
    shutil.copy(outputs[0], tmp_path / "shards" / "shard0_copy.jsonl")
    merged = tmp_path / "merged" / "all.jsonl"
    result = merge_rollouts(str(tmp_path / "shards" / "shard*.jsonl"), merged)
    assert len(result["inputs"]) == 4  # failure files matched by the glob are skipped
    assert result["num_duplicates"] == len(read_jsonl(outputs[0]))
    expected = {(t, r) for t in range(25) for r in range(2) if t != 7}
    rows = read_jsonl(merged)
    assert len(rows) == len(expected) and set(keys(rows)) == expected
    assert set(keys(read_jsonl(OutputPaths.from_output(merged).failures))) == {(7, 0), (7, 1)}

    aggregate = orjson.loads(OutputPaths.from_output(merged).aggregate_metrics.read_bytes())
    assert aggregate == result["aggregate_metrics"]
    (entry,) = aggregate
    assert entry["agent_ref"] == {"name": "agent"}
    assert entry["agent_metrics"]["num_rollouts"] == 48
    assert len(entry["group_level_metrics"]) == 24
    assert entry["key_metrics"]["mean/reward"] == pytest.approx(sum(t % 2 for t, _ in expected) / 48)


def test_merge_with_nothing_to_merge_says_so(tmp_path: Path) -> None:
    with pytest.raises(RolloutError, match="No shard outputs"):
        merge_rollouts(str(tmp_path / "none*.jsonl"), tmp_path / "out.jsonl")
    with pytest.raises(RolloutError, match="does not exist"):
        merge_rollouts([tmp_path / "missing.jsonl"], tmp_path / "out.jsonl")
