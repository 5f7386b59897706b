"""``RolloutCollector``: dataset -> bounded scheduler -> dispatch -> append-only files -> summary.

At most ``num_samples_in_parallel`` rollouts are in flight (a rollout waiting for its backoff or
for a slow consumer still holds its slot), and the input is read one line at a time as slots
free up, so memory does not grow with the dataset. Every rollout ends as exactly one success
line or one failure line; a rollout stopped before its final outcome writes nothing and is
collected again on resume. The CLI and trainer code are two faces of this one class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from gymfleet.errors import ClientError, ConfigError, RolloutError
from gymfleet.rollouts.aggregate import Aggregate, write_aggregate_metrics
from gymfleet.rollouts.config import CollectionConfig
from gymfleet.rollouts.dataset import DatasetReader, WorkItem, scan_dataset
from gymfleet.rollouts.failures import AGENT_ERROR, INVALID_ROW, TIMEOUT, RolloutFailure, classify_exception
from gymfleet.rollouts.paths import OutputPaths
from gymfleet.rollouts.progress import Progress, ProgressSnapshot, make_progress
from gymfleet.rollouts.records import check_answer, failure_record, now_iso, success_line
from gymfleet.rollouts.results import CollectionAbortedError, CollectionSummary, RolloutResult
from gymfleet.rollouts.resume import ResumeState, RunLock, prepare_outputs
from gymfleet.rollouts.signals import install_signal_handlers
from gymfleet.rollouts.writer import JsonlAppender

__all__ = ["Aggregate", "Dispatch", "RolloutCollector"]

logger = logging.getLogger("gymfleet.rollouts")

Dispatch = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
_END = object()
_CANCEL_WAIT_S = 10.0
_MAX_RETRY_AFTER_S = 300.0
_RAMP_INITIAL = 128  # admission slow start (see _admission_limit)
_RAMP_DOUBLING_S = 0.5
_RAMP_TICK_S = 0.05


class RolloutCollector:
    """Collect rollouts for one :class:`CollectionConfig`; runs once.

    Args:
        config: The run.
        dispatch: ``async (row) -> verify response``; raise a typed error (or a
            :class:`~gymfleet.rollouts.failures.RolloutFailure`) when the rollout failed.
            ``gymfleet.rollouts.make_dispatch(client)`` posts rows to agents' ``/run``.
        aggregate: ``async (agent_name, stripped successes) -> metrics``; defaults to local
            :func:`~gymfleet.rollouts.metrics.aggregate_metrics`, which is also the fallback.
        progress: Where progress goes; by default a live display, or log lines when quiet.

    Use ``await collector.run()`` for everything, or ``async for result in collector`` to get each
    finished rollout as it lands (admission pauses while the consumer is busy). Close an early
    exit with ``contextlib.aclosing(collector.iterate())`` so in-flight work stops promptly.
    """

    def __init__(
        self,
        config: CollectionConfig,
        dispatch: Dispatch,
        *,
        aggregate: Aggregate | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.paths = OutputPaths.from_output(config.output_jsonl_fpath)
        self.reader: DatasetReader | None = None
        self.summary: CollectionSummary | None = None
        self._dispatch = dispatch
        self._aggregate = aggregate
        self._progress = progress or make_progress(
            quiet=config.quiet, interval_s=config.progress_log_interval_s
        )
        self._started = False
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._stop_reason: str | None = None
        self._abort_message: str | None = None
        self._fatal: BaseException | None = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=config.num_samples_in_parallel)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._ramp_start = time.monotonic()
        self._stop_waiter: asyncio.Future[Any] | None = None
        # Set on every state change the schedulers wait for (a slot freed, stop, force), so each
        # wake-up costs O(1) whatever the number of rollouts in flight.
        self._wakeup = asyncio.Event()
        self._cooldown_until = 0.0
        self._t0 = time.monotonic()
        self._first_dispatch_at: float | None = None
        self._last_outcome_at: float | None = None
        self._expected = 0
        self._cached_ok = 0
        self._cached_failed: Counter[str] = Counter()
        self._run_ok = 0
        self._run_failed: Counter[str] = Counter()
        self._retried = 0
        self._rate_finished = 0
        self._rate_failed = 0
        self._seen_classes: set[str] = set()
        self._ok_out: JsonlAppender | None = None
        self._fail_out: JsonlAppender | None = None
        self._materialized: JsonlAppender | None = None

    # ------------------------------------------------------------------------------ public API
    def __aiter__(self) -> AsyncIterator[RolloutResult]:
        return self.iterate()

    def request_stop(self, reason: str = "stop requested") -> None:
        """Admit nothing more; in-flight rollouts get ``stop_grace_s`` to finish, then are dropped."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()
            self._wakeup.set()

    async def run(self, *, handle_signals: bool = True) -> CollectionSummary:
        """Collect everything, write aggregate metrics and return the summary.

        With ``handle_signals`` (main thread only), SIGINT/SIGTERM stop admission and give
        in-flight rollouts a grace period; a second signal drops them at once.

        Raises:
            CollectionAbortedError: more than ``max_failure_rate`` of finished rollouts failed.
            DatasetError: a broken input line (without ``skip_invalid_rows``).
            ResumeMismatchError: resume refused because the run identity changed.
        """
        restore = install_signal_handlers(self._on_signal) if handle_signals else []
        try:
            async for _ in self.iterate():
                pass
        finally:
            for undo in restore:
                undo()
        assert self.summary is not None
        return self.summary

    async def iterate(self) -> AsyncIterator[RolloutResult]:
        """Yield each rollout that reaches its final outcome in this run, as it lands on disk."""
        if self._started:
            raise RolloutError("A RolloutCollector runs once; create a new one to collect again")
        self._started = True
        producer = asyncio.create_task(self._produce())
        drained = False
        try:
            while True:
                item = await self._queue.get()
                if item is _END:
                    drained = True
                    break
                yield item
        except asyncio.CancelledError:
            self._force.set()  # a cancelled caller wants out now: no grace period
            self._wakeup.set()
            raise
        finally:
            if not drained:
                await self._abandon(producer)
        await producer  # re-raises what stopped the run (dataset, resume, disk errors)
        if self._abort_message is not None and self.summary is not None:
            raise CollectionAbortedError(self._abort_message, summary=self.summary)

    # ------------------------------------------------------------------------------ the run
    async def _abandon(self, producer: asyncio.Task[None]) -> None:
        """The consumer left early: stop, keep draining so rollout tasks never block on the queue."""
        self.request_stop("the consumer stopped iterating")
        deadline = time.monotonic() + self.config.stop_grace_s + _CANCEL_WAIT_S
        while not producer.done() and time.monotonic() < deadline:
            while not self._queue.empty():
                self._queue.get_nowait()
            await asyncio.wait({producer}, timeout=0.05)
        if not producer.done():
            producer.cancel()
            await asyncio.wait({producer}, timeout=_CANCEL_WAIT_S)
        if producer.done() and not producer.cancelled() and producer.exception() is not None:
            logger.error("collection ended with an error after the consumer left: %s", producer.exception())

    async def _produce(self) -> None:
        try:
            await self._collect()
        finally:
            try:
                self._queue.put_nowait(_END)
            except asyncio.QueueFull:
                await self._queue.put(_END)

    async def _collect(self) -> None:
        cfg = self.config
        self._t0 = time.monotonic()
        lock = RunLock(self.paths.lock)
        lock.acquire()
        try:
            scan = await asyncio.to_thread(scan_dataset, cfg.input_jsonl_fpath, cfg)
            self._expected = scan.expected
            identity = {
                "input_sha256": scan.sha256,
                "input_jsonl_fpath": str(Path(cfg.input_jsonl_fpath).resolve()),
                **cfg.identity(),
            }
            state = await asyncio.to_thread(
                prepare_outputs, self.paths, identity, resume=cfg.resume_from_cache, force=cfg.force_resume
            )
            self._ok_out = JsonlAppender(self.paths.output, fsync_interval_ms=cfg.fsync_interval_ms)
            self._fail_out = JsonlAppender(self.paths.failures, fsync_interval_ms=cfg.fsync_interval_ms)
            self._materialized = JsonlAppender(
                self.paths.materialized_inputs, fsync_interval_ms=-1, truncate=True
            )
            self._progress.start(self._snapshot())
            ticker = asyncio.create_task(self._tick())
            self._stop_waiter = asyncio.ensure_future(self._stop.wait())
            try:
                await self._admit(state)
            finally:
                self._stop_waiter.cancel()
                ticker.cancel()
                await asyncio.wait({ticker, self._stop_waiter}, timeout=_CANCEL_WAIT_S)
                for out in (self._ok_out, self._fail_out, self._materialized):
                    out.close()
                self._progress.close(self._snapshot())
                self.summary = self._summarize({}, None)
            if not cfg.disable_aggregation and not self._stop.is_set():
                entries = await write_aggregate_metrics(
                    self.paths.output,
                    self.paths.aggregate_metrics,
                    aggregate=self._aggregate,
                    repeats_for=self._repeats_or_none,
                    timeout_s=cfg.rollout_timeout_s,
                )
                key_metrics = {e["agent_ref"]["name"]: dict(e["key_metrics"]) for e in entries}
                self.summary = self._summarize(key_metrics, str(self.paths.aggregate_metrics))
            if self._stop_reason and self._abort_message is None:
                logger.warning("collection stopped early (%s):\n%s", self._stop_reason, self.summary.format())
        finally:
            lock.release()

    def _admission_limit(self) -> int:
        """Slow start: a huge ``num_samples_in_parallel`` is reached by doubling from _RAMP_INITIAL every
        _RAMP_DOUBLING_S, so the first rollouts finish in seconds instead of all 10k advancing in lock-step."""
        cap = self.config.num_samples_in_parallel
        if cap <= _RAMP_INITIAL:
            return cap
        elapsed = time.monotonic() - self._ramp_start
        return min(cap, int(_RAMP_INITIAL * 2 ** (elapsed / _RAMP_DOUBLING_S)))

    async def _admit(self, state: ResumeState) -> None:
        cfg = self.config
        self._ramp_start = time.monotonic()
        self.reader = DatasetReader(cfg.input_jsonl_fpath, cfg)
        items = iter(self.reader)
        stop_waiter = self._stop_waiter
        assert stop_waiter is not None
        try:
            for count, item in enumerate(items):
                if self._stop.is_set():
                    break
                if count % 256 == 255:
                    await asyncio.sleep(0)  # long runs of cached rows must not starve in-flight work
                if item.invalid is None:
                    assert self._materialized is not None
                    self._materialized.write(item.row)
                history = state.failures.get(item.key)
                if item.key in state.done:
                    self._cached_ok += 1
                    continue
                if history is not None and (history.terminal or history.attempts >= cfg.max_attempts):
                    self._cached_failed[history.last_class] += 1
                    continue
                if item.invalid is not None:
                    await self._record_invalid(item)
                    continue
                while len(self._in_flight) >= self._admission_limit() and not self._stop.is_set():
                    self._wakeup.clear()
                    if self._admission_limit() < cfg.num_samples_in_parallel:  # still ramping up: re-check soon
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(self._wakeup.wait(), _RAMP_TICK_S)
                    else:
                        await self._wakeup.wait()
                pause = self._cooldown_until - time.monotonic()
                if pause > 0:
                    await asyncio.wait({stop_waiter}, timeout=pause)
                if self._stop.is_set():
                    break
                attempts_before = history.attempts if history is not None else 0
                if self._first_dispatch_at is None:
                    self._first_dispatch_at = time.time()
                task = asyncio.create_task(self._run_rollout(item, attempts_before))
                self._in_flight.add(task)
                task.add_done_callback(self._on_task_done)
            await self._drain()
        finally:
            items.close()  # type: ignore[attr-defined]
            if self._in_flight:
                for task in list(self._in_flight):
                    task.cancel()
                await asyncio.wait(set(self._in_flight), timeout=_CANCEL_WAIT_S)
        if self._fatal is not None:
            raise self._fatal

    async def _drain(self) -> None:
        while self._in_flight and not self._stop.is_set():
            self._wakeup.clear()
            await self._wakeup.wait()
        if not self._in_flight:
            return
        grace = 0.0 if self._force.is_set() else self.config.stop_grace_s
        logger.warning(
            "stopping (%s): giving %d in-flight rollouts up to %.0fs to finish; unfinished ones are "
            "collected again on resume",
            self._stop_reason,
            len(self._in_flight),
            grace,
        )
        deadline = time.monotonic() + grace
        while self._in_flight and not self._force.is_set() and time.monotonic() < deadline:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
        pending = set(self._in_flight)
        for task in pending:
            task.cancel()
        if pending:
            _, still = await asyncio.wait(pending, timeout=_CANCEL_WAIT_S)
            if still:
                logger.error(
                    "%d rollout tasks ignored cancellation; their dispatch swallows CancelledError",
                    len(still),
                )

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wakeup.set()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self._fatal is None:
            # A rollout task only raises when its outcome could not be recorded (disk full, a bug):
            # carrying on would lose rows, so stop everything.
            self._fatal = exc
            self._force.set()
            self._wakeup.set()
            self.request_stop(f"could not record a rollout: {exc}")

    async def _run_rollout(self, item: WorkItem, attempts_before: int) -> None:
        cfg = self.config
        row = item.row
        agent = str(row["agent_ref"]["name"])
        attempt = attempts_before
        tries = 0
        started_at = now_iso()
        while True:
            send = dict(row)
            if attempt > 0:
                send["_ng_attempt_index"] = attempt
            tries += 1
            t_start = time.monotonic()
            result: Any = None
            try:
                result = await asyncio.wait_for(self._dispatch(send), timeout=cfg.rollout_timeout_s)
                failure = check_answer(result, agent)
            except asyncio.CancelledError:
                raise
            except asyncio.TimeoutError as exc:
                if time.monotonic() - t_start >= cfg.rollout_timeout_s * 0.99:
                    failure = RolloutFailure(
                        f"no answer from agent '{agent}' within rollout_timeout_s={cfg.rollout_timeout_s:g}s",
                        failure_class=TIMEOUT,
                        retryable=True,
                        server=agent,
                    )
                else:
                    failure = classify_exception(exc, server=agent)
            except Exception as exc:
                failure = classify_exception(exc, server=agent)
                if not isinstance(exc, (RolloutFailure, ClientError, OSError)):
                    self._log_unexpected(exc, item)
            if failure is None:
                line = success_line(row, result, attempt)
                if isinstance(line, bytes):
                    assert self._ok_out is not None
                    self._ok_out.write_line(line)
                    self._count(ok=True, failure_class=None)
                    await self._queue.put(RolloutResult(orjson.loads(line), True, None, tries))
                    return
                failure = line
            can_retry = failure.retryable and attempt + 1 < cfg.max_attempts
            if can_retry and self._stop.is_set():
                return  # not final: write nothing, resume will collect it again
            if can_retry:
                self._retried += 1
                self._note_first(failure, item, retry=True)
                attempt += 1
                if not await self._backoff(tries, failure):
                    return
                continue
            self._note_first(failure, item, retry=False)
            record = failure_record(row, failure, attempt=attempt, tries=tries, started_at=started_at)
            assert self._fail_out is not None
            self._fail_out.write(record)
            self._count(ok=False, failure_class=failure.failure_class)
            await self._queue.put(RolloutResult(record, False, failure.failure_class, tries))
            return

    async def _record_invalid(self, item: WorkItem) -> None:
        failure = RolloutFailure(
            f"{self.config.input_jsonl_fpath}:{item.line}: {item.invalid}",
            failure_class=INVALID_ROW,
            retryable=False,
            terminal=True,
        )
        record = failure_record(item.row, failure, attempt=0, tries=0, started_at=now_iso())
        assert self._fail_out is not None
        self._fail_out.write(record)
        self._count(ok=False, failure_class=INVALID_ROW)
        await self._queue.put(RolloutResult(record, False, INVALID_ROW, 0))

    async def _backoff(self, tries: int, failure: RolloutFailure) -> bool:
        """Sleep before the next attempt; False when the run stopped meanwhile."""
        cfg = self.config
        delay = min(cfg.retry_backoff_max_s, cfg.retry_backoff_base_s * 2 ** (tries - 1))
        delay = random.uniform(delay / 2, delay)
        if failure.retry_after_s:
            asked = min(failure.retry_after_s, _MAX_RETRY_AFTER_S)
            delay = max(delay, asked)
            # Everyone waits, not just this row: admitting more would keep the quota exhausted.
            self._cooldown_until = max(self._cooldown_until, time.monotonic() + asked)
        if self._stop.is_set() or self._stop_waiter is None:
            return False
        await asyncio.wait({self._stop_waiter}, timeout=delay)
        return not self._stop.is_set()

    def _count(self, *, ok: bool, failure_class: str | None) -> None:
        cfg = self.config
        self._last_outcome_at = time.time()
        if ok:
            self._run_ok += 1
        else:
            self._run_failed[failure_class or AGENT_ERROR] += 1
        if failure_class == INVALID_ROW:
            return  # broken input lines are a data problem, not a sign that the fleet is failing
        self._rate_finished += 1
        self._rate_failed += 0 if ok else 1
        if (
            self._abort_message is None
            and self._rate_finished >= cfg.min_rows_for_failure_rate
            and self._rate_failed > cfg.max_failure_rate * self._rate_finished
        ):
            by_class = ", ".join(f"{k}={v}" for k, v in sorted(self._run_failed.items()))
            self._abort_message = (
                f"Aborting rollout collection: {self._rate_failed} of the {self._rate_finished} rollouts "
                f"finished in this run failed ({by_class}), more than "
                f"max_failure_rate={cfg.max_failure_rate:g}. "
                f"See {self.paths.failures} for each failure's server and message; fix the cause, then "
                "resume with +resume_from_cache=true (raise +max_attempts to retry exhausted rows)."
            )
            logger.error("%s", self._abort_message)
            self.request_stop("failure rate above max_failure_rate")

    def _log_unexpected(self, exc: Exception, item: WorkItem) -> None:
        kind = f"unexpected:{type(exc).__name__}"
        if kind in self._seen_classes:
            return
        self._seen_classes.add(kind)
        logger.error(
            "dispatch of rollout %s raised an unexpected %s", item.key, type(exc).__name__, exc_info=exc
        )

    def _note_first(self, failure: RolloutFailure, item: WorkItem, *, retry: bool) -> None:
        if failure.failure_class in self._seen_classes:
            logger.debug("rollout %s: %s (%s)", item.key, failure, "retrying" if retry else "final")
            return
        self._seen_classes.add(failure.failure_class)
        logger.warning(
            "first '%s' failure (rollout %s, %s): %s; further ones are counted in the progress and summary",
            failure.failure_class,
            item.key,
            "will retry" if retry else "final",
            failure,
        )

    # ------------------------------------------------------------------------------ reporting
    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.config.progress_interval_s)
            self._progress.update(self._snapshot())

    def _snapshot(self) -> ProgressSnapshot:
        return ProgressSnapshot(
            expected=self._expected,
            succeeded=self._cached_ok + self._run_ok,
            failed_by_class=dict(self._cached_failed + self._run_failed),
            in_flight=len(self._in_flight),
            retried=self._retried,
            skipped_from_cache=self._cached_ok + sum(self._cached_failed.values()),
            finished_this_run=self._run_ok + sum(self._run_failed.values()),
            elapsed_s=time.monotonic() - self._t0,
        )

    def _summarize(
        self, key_metrics: dict[str, dict[str, float]], aggregate_path: str | None
    ) -> CollectionSummary:
        snap = self._snapshot()
        missing = snap.expected - snap.done
        notes = []
        if missing < 0:
            notes.append(
                f"The input changed while it was being read: {-missing} more outcomes than expected."
            )
            logger.error("%s", notes[-1])
            missing = 0
        return CollectionSummary(
            expected=snap.expected,
            succeeded=snap.succeeded,
            failed_by_class=snap.failed_by_class,
            retried=snap.retried,
            skipped_from_cache=snap.skipped_from_cache,
            missing=missing,
            wall_s=snap.elapsed_s,
            rollouts_per_s=snap.rollouts_per_s,
            key_metrics=key_metrics,
            output_jsonl_fpath=str(self.paths.output),
            failures_jsonl_fpath=str(self.paths.failures),
            materialized_inputs_jsonl_fpath=str(self.paths.materialized_inputs),
            aggregate_metrics_fpath=aggregate_path,
            run_header_fpath=str(self.paths.run_header),
            stopped_reason=self._stop_reason,
            finished_this_run=snap.finished_this_run,
            notes=notes,
            first_dispatch_at=self._first_dispatch_at,
            last_outcome_at=self._last_outcome_at,
        )

    def _repeats_or_none(self, agent: str) -> int | None:
        try:
            return self.config.repeats_for(agent)
        except ConfigError:
            return None

    # ------------------------------------------------------------------------------ signals
    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            logger.warning("received %s again: dropping in-flight rollouts now", sig.name)
            self._force.set()
            self._wakeup.set()
            return
        logger.warning(
            "received %s: admitting no more rollouts, waiting up to %.0fs for in-flight ones "
            "(send it again to stop at once)",
            sig.name,
            self.config.stop_grace_s,
        )
        self.request_stop(f"received {sig.name}")
