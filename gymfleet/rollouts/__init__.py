"""Rollout collection: read a dataset, run every rollout through an agent, never lose a row.

The CLI (``ng_collect_rollouts`` / ``gymfleet collect``) and trainer code both drive
:class:`RolloutCollector`::

    config = CollectionConfig.from_mapping(cfg)
    collector = RolloutCollector(config, make_dispatch(client), aggregate=make_aggregate(client))
    summary = await collector.run()          # or: async for result in collector: ...
"""

from __future__ import annotations

from gymfleet.rollouts.aggregate import Aggregate, load_successes, write_aggregate_metrics
from gymfleet.rollouts.config import CollectionConfig
from gymfleet.rollouts.dataset import DatasetReader, DatasetScan, WorkItem, scan_dataset
from gymfleet.rollouts.engine import Dispatch, RolloutCollector
from gymfleet.rollouts.failures import (
    FAILURE_CLASSES,
    RolloutFailure,
    check_reward,
    classify_exception,
    classify_status,
)
from gymfleet.rollouts.http import PostClient, make_aggregate, make_dispatch
from gymfleet.rollouts.merge import merge_rollouts
from gymfleet.rollouts.metrics import aggregate_metrics, strip_for_metrics
from gymfleet.rollouts.paths import OutputPaths
from gymfleet.rollouts.progress import LogProgress, Progress, ProgressSnapshot, RichProgress, make_progress
from gymfleet.rollouts.results import CollectionAbortedError, CollectionSummary, RolloutResult
from gymfleet.rollouts.resume import ResumeState, load_resume_state
from gymfleet.rollouts.writer import JsonlAppender, repair_torn_tail

__all__ = [
    "FAILURE_CLASSES",
    "Aggregate",
    "CollectionAbortedError",
    "CollectionConfig",
    "CollectionSummary",
    "DatasetReader",
    "DatasetScan",
    "Dispatch",
    "JsonlAppender",
    "LogProgress",
    "OutputPaths",
    "PostClient",
    "Progress",
    "ProgressSnapshot",
    "ResumeState",
    "RichProgress",
    "RolloutCollector",
    "RolloutFailure",
    "RolloutResult",
    "WorkItem",
    "aggregate_metrics",
    "check_reward",
    "classify_exception",
    "classify_status",
    "load_resume_state",
    "load_successes",
    "make_aggregate",
    "make_dispatch",
    "make_progress",
    "merge_rollouts",
    "repair_torn_tail",
    "scan_dataset",
    "strip_for_metrics",
    "write_aggregate_metrics",
]
