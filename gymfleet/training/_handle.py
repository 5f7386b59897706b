"""``start_fleet`` / ``FleetHandle``: a fleet inside a trainer's Ray cluster, and batches of grouped rollouts.

The trainer (a Ray driver) calls :func:`start_fleet`; one head actor runs ``Fleet`` in head mode, and one
worker actor per extra node config runs ``Fleet`` in worker mode, all in one placement group (SPREAD or
PACK). The fleet joins the trainer's own cluster: the driver's GCS address becomes the config's
``ray_head_node_address``. Rollouts are collected in the trainer's process by the one collection engine
(:class:`~gymfleet.rollouts.RolloutCollector`), which talks to the fleet's servers over HTTP.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson

from gymfleet.client import ServerClient
from gymfleet.errors import LauncherError
from gymfleet.rollouts import CollectionConfig, RolloutCollector, RolloutResult, make_dispatch
from gymfleet.training._actor import fleet_actor_class
from gymfleet.training._groups import Group
from gymfleet.training._rollout import TrainingRollout, token_turns

__all__ = ["FleetHandle", "TrainingFleetError", "start_fleet"]

logger = logging.getLogger("gymfleet.training")

Placement = Literal["spread", "pack"]
_ACTOR_CALL_GRACE_S = 30.0


class TrainingFleetError(LauncherError):
    """The fleet could not be started inside (or stopped from) the trainer's Ray cluster."""


def _plain_config(config: Any) -> dict[str, Any]:
    if hasattr(config, "_metadata"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(config, resolve=False)  # type: ignore[return-value]
    return orjson.loads(orjson.dumps(dict(config)))  # a deep, picklable copy of plain data


def _import_ray() -> Any:
    from gymfleet.ray_support import import_ray

    return import_ray("gymfleet.training (the fleet as Ray actors inside a trainer's cluster)")


class FleetHandle:
    """The trainer's handle on a running fleet. Made by :func:`start_fleet`; end it with :meth:`shutdown`."""

    def __init__(
        self, *, ray: Any, actors: list[Any], placement_group: Any, infos: list[dict[str, Any]]
    ) -> None:
        self._ray = ray
        self._actors = actors
        self._pg = placement_group
        self.infos = infos  # per actor (head first): head_url, servers [{name, url, pid}], pid, node_ip
        self.head_server: dict[str, Any] = dict(infos[0]["head_server"])
        self.head_url: str = str(infos[0]["head_url"])
        self._batches = 0
        self._closed = False

    @property
    def servers(self) -> dict[str, str]:
        """Server name -> URL, over every node."""
        return {line["name"]: line["url"] for info in self.infos for line in info["servers"]}

    def pids(self) -> list[int]:
        """Pids of the actors and of every server they run."""
        return [info["pid"] for info in self.infos] + [
            int(line["pid"]) for info in self.infos for line in info["servers"] if line.get("pid")
        ]

    def client(self) -> ServerClient:
        """A client that routes server names through this fleet's head."""
        return ServerClient({"head_server": self.head_server})

    async def rollouts(
        self,
        prompts: Sequence[Mapping[str, Any]],
        *,
        agent: str,
        group_size: int = 1,
        policy_version: int | str | None = None,
        group_ids: Sequence[str] | None = None,
        num_samples_in_parallel: int = 64,
        rollout_timeout_s: float = 1800.0,
        max_attempts: int = 3,
        responses_create_params: Mapping[str, Any] | None = None,
        work_dir: str | Path | None = None,
    ) -> AsyncIterator[TrainingRollout]:
        """Run ``group_size`` rollouts of every prompt; yield each as it finishes, exactly once.

        Admission pauses while the caller is busy (at most ``num_samples_in_parallel`` rollouts in flight).
        Leaving the loop early stops in-flight rollouts. A failed rollout is yielded with ``ok=False`` and
        its failure class, never as reward 0.

        Args:
            prompts: Dataset rows (``responses_create_params`` plus what the environment verifies against).
            agent: Agent server for rows without ``agent_ref``.
            group_size: Rollouts per prompt (GRPO's group).
            policy_version: Tag put on every rollout of this batch (e.g. the trainer's step).
            group_ids: One id per prompt; default ``<batch>/<prompt index>``.
            num_samples_in_parallel: Most rollouts in flight.
            rollout_timeout_s: Deadline of one attempt.
            max_attempts: Attempts per rollout for retryable failures.
            responses_create_params: Merged over every row's (e.g. ``temperature``).
            work_dir: Where the collector writes its files (default: a temp dir, removed afterwards).
        """
        if self._closed:
            raise TrainingFleetError(
                "this FleetHandle was shut down; call gymfleet.training.start_fleet again"
            )
        self._batches += 1
        batch = f"{policy_version}-b{self._batches}-{uuid.uuid4().hex[:6]}"
        if group_ids is not None and len(group_ids) != len(prompts):
            raise ValueError(
                f"group_ids has {len(group_ids)} entries for {len(prompts)} prompts; give one per prompt"
            )
        ids = list(group_ids) if group_ids is not None else [f"{batch}/{i}" for i in range(len(prompts))]
        own_dir = work_dir is None
        root = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="gymfleet-batch-"))
        root.mkdir(parents=True, exist_ok=True)
        try:
            source = root / "prompts.jsonl"
            source.write_bytes(b"".join(orjson.dumps(dict(p)) + b"\n" for p in prompts))
            config = CollectionConfig(
                agent_name=agent,
                input_jsonl_fpath=str(source),
                output_jsonl_fpath=str(root / "rollouts.jsonl"),
                num_repeats=group_size,
                num_samples_in_parallel=num_samples_in_parallel,
                responses_create_params=dict(responses_create_params or {}),
                rollout_timeout_s=rollout_timeout_s,
                max_attempts=max_attempts,
                max_failure_rate=1.0,  # the trainer decides what a bad batch is; never abort mid-step
                disable_aggregation=True,
                quiet=True,
                progress_log_interval_s=3600.0,
                fsync_interval_ms=-1,
            )
            client = self.client()
            collector = RolloutCollector(config, make_dispatch(client))
            # iterate() is an async generator (annotated AsyncIterator): aclosing stops in-flight work on exit
            async with contextlib.aclosing(collector.iterate()) as results:  # type: ignore[type-var]
                async for result in results:
                    yield _to_training_rollout(result, ids, policy_version)
        finally:
            if own_dir:
                shutil.rmtree(root, ignore_errors=True)

    async def grouped(
        self, prompts: Sequence[Mapping[str, Any]], *, agent: str, group_size: int, **kwargs: Any
    ) -> list[Group]:
        """Collect a whole batch; return one :class:`Group` per prompt (prompt order, rollout-index order).

        Keyword arguments are those of :meth:`rollouts`. Each group has ``stats`` (mean, std, min, max,
        failed) and ``advantages()`` (GRPO).
        """
        groups: dict[int, Group] = {}
        async for r in self.rollouts(prompts, agent=agent, group_size=group_size, **kwargs):
            group = groups.setdefault(r.task_index, Group(r.group_id, r.task_index, r.policy_version))
            group.rollouts.append(r)
        for group in groups.values():
            group.rollouts.sort(key=lambda r: r.rollout_index)
        return [groups[i] for i in sorted(groups)]

    def shutdown(self, timeout_s: float = 60.0) -> None:
        """Stop every server and actor and free the placement group. Idempotent."""
        if self._closed:
            return
        self._closed = True
        ray = self._ray
        # Workers first: they deregister from the head, which goes last.
        for actor in reversed(self._actors):
            try:
                ray.get(actor.stop.remote(), timeout=timeout_s)
            except Exception as exc:  # a dead actor took its servers with it; kill it regardless
                logger.warning("fleet actor did not stop cleanly (%s); killing it", exc)
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        if self._pg is not None:
            with contextlib.suppress(Exception):
                ray.util.remove_placement_group(self._pg)
        logger.info("training fleet at %s shut down", self.head_url)

    def __enter__(self) -> FleetHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _to_training_rollout(
    result: RolloutResult, group_ids: list[str], policy_version: int | str | None
) -> TrainingRollout:
    row = dict(result.row)
    task, index = result.key
    row["group_id"] = group_ids[task]
    row["policy_version"] = policy_version
    response = row.get("response")
    output = response.get("output") if isinstance(response, dict) else None
    reward = row.get("reward") if result.ok else None
    return TrainingRollout(
        group_id=group_ids[task],
        policy_version=policy_version,
        task_index=task,
        rollout_index=index,
        ok=result.ok,
        reward=float(reward) if reward is not None else None,
        failure_class=result.failure_class,
        failure_message=None if result.ok else str(row.get("_ng_failure_message") or result.failure_class),
        turns=token_turns(output),
        row=row,
    )


def start_fleet(
    config: Any,
    *,
    placement: Placement = "spread",
    worker_configs: Sequence[Any] = (),
    head_host: str | None = None,
    head_port: int = 0,
    actor_num_cpus: float = 1.0,
    startup_timeout_s: float = 300.0,
    log_dir: str | Path | None = None,
    spawn_method: str = "exec",
) -> FleetHandle:
    """Bring a fleet up as Ray actors inside the cluster this process (the trainer) is connected to.

    Args:
        config: The fleet config (mapping or OmegaConf, e.g. from :func:`gymfleet.config.load_config`); its
            servers run on the head actor's node.
        placement: ``spread`` (actors on different nodes where possible) or ``pack``.
        worker_configs: One config per extra node; each one's servers run there in worker mode and register
            with the head.
        head_host: Address the head binds (default loopback, or the head node's IP when there are workers).
        head_port: The head's port; 0 lets the OS choose (read it back from ``handle.head_server``).
        actor_num_cpus: CPUs reserved per actor (one placement-group bundle each).
        startup_timeout_s: How long servers get to become ready.
        log_dir: Server logs (default: a new directory under the system temp dir).
        spawn_method: ``exec`` (default; safest inside a Ray worker) or ``zygote``.

    Raises:
        MissingExtraError: Ray is not installed (``pip install 'gymfleet[ray]'``).
        TrainingFleetError: this process is not a Ray driver, or placement / startup failed.
    """
    ray = _import_ray()
    if not ray.is_initialized():
        raise TrainingFleetError(
            "gymfleet.training.start_fleet runs inside a Ray driver: call ray.init() (or "
            "ray.init(address=...) to join the trainer's cluster) first"
        )
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    address = str(ray.get_runtime_context().gcs_address)
    head_cfg = _plain_config(config)
    workers = [_plain_config(c) for c in worker_configs]
    logs = str(log_dir or tempfile.mkdtemp(prefix="gymfleet-training-logs-"))
    options = {
        "log_dir": logs, "quiet": True, "startup_timeout_s": startup_timeout_s, "spawn_method": spawn_method
    }
    for cfg in (head_cfg, *workers):
        _join_trainer_cluster(cfg, address)
    strategy = "SPREAD" if placement == "spread" else "PACK"
    bundles = [{"CPU": actor_num_cpus} for _ in range(1 + len(workers))]
    pg = ray.util.placement_group(bundles, strategy=strategy)
    actors: list[Any] = []
    infos: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        try:
            ray.get(pg.ready(), timeout=startup_timeout_s)
        except Exception as exc:
            raise TrainingFleetError(
                f"the cluster did not grant {len(bundles)} bundle(s) of {actor_num_cpus} CPU ({strategy}) "
                f"within "
                f"{startup_timeout_s:.0f}s: add nodes/CPUs, or lower actor_num_cpus ({exc})"
            ) from exc
        cls = fleet_actor_class(ray)

        def make_actor(index: int) -> Any:
            actor = cls.options(
                num_cpus=actor_num_cpus,
                name=None,
                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index),
            ).remote()
            actors.append(actor)
            return actor

        head = make_actor(0)
        host = head_host or ("127.0.0.1" if not workers else ray.get(head.node_ip.remote(), timeout=60))
        head_cfg["head_server"] = {**(head_cfg.get("head_server") or {}), "host": host, "port": head_port}
        infos.append(_call(ray, head.start.remote(head_cfg, "head", options), startup_timeout_s, "head"))
        for index, cfg in enumerate(workers, start=1):
            actor = make_actor(index)
            cfg["head_server"] = dict(infos[0]["head_server"])
            cfg.setdefault("default_host", ray.get(actor.node_ip.remote(), timeout=60))
            ref = actor.start.remote(cfg, "worker", options)
            infos.append(_call(ray, ref, startup_timeout_s, f"worker {index}"))
    except BaseException:
        FleetHandle(ray=ray, actors=actors, placement_group=pg, infos=infos or [_NO_INFO]).shutdown()
        raise
    logger.info(
        "training fleet up in %.1fs: head %s, %d actor(s), %d server(s), Ray cluster %s",
        time.monotonic() - started,
        infos[0]["head_url"],
        len(actors),
        sum(len(i["servers"]) for i in infos),
        address,
    )
    return FleetHandle(ray=ray, actors=actors, placement_group=pg, infos=infos)


_NO_INFO: dict[str, Any] = {"head_server": {}, "head_url": "", "servers": [], "pid": 0}


def _join_trainer_cluster(cfg: dict[str, Any], address: str) -> None:
    """Point the fleet's Ray users at the trainer's cluster: no second cluster, no address typed by hand."""
    named = cfg.get("ray_head_node_address")
    if named and str(named) != address:
        logger.warning(
            "config names ray_head_node_address=%s but the trainer runs in %s: using the trainer's cluster",
            named,
            address,
        )
    cfg["ray_head_node_address"] = address
    token = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if token and not cfg.get("ray_auth_token_path"):
        cfg["ray_auth_token_path"] = token


def _call(ray: Any, ref: Any, timeout_s: float, what: str) -> dict[str, Any]:
    try:
        return ray.get(ref, timeout=timeout_s + _ACTOR_CALL_GRACE_S)  # type: ignore[no-any-return]
    except Exception as exc:
        raise TrainingFleetError(f"the fleet's {what} actor did not start: {exc}") from exc
