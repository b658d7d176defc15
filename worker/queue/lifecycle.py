"""The life cycle of one stage run, as steps: claim → gather → work → commit → hand off.

1. **claim** (``selection.py``, ``claims.py``): the run the scheduler puts first, its lease and
   one more attempt, or the reason not to run.
2. **gather**: a batched stage takes compatible waiting jobs along (its companions).
3. **work**: the stage's function (``worker.stages``), while the monitor renews the leases,
   shows progress and notes cancellation.
4. **commit** (``commits.py``): each job's result under its own lease.
5. **hand off** (``handoff.py``): the job's next stage runs here or goes as a message.

A failed attempt is settled by the retry policy (``retry.decide``): the job fails, or the stage
runs again after a backoff. The Celery tasks only call ``run_stage``.

One module, over 300 lines: the steps read in order, each a short function that calls the
module owning that step.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass

from celery import Task
from sqlalchemy.orm import Session

from imggen.errors import StageAborted
from producer import logs
from producer.artifacts import job_prefix
from producer.db import in_transaction
from producer.events import notify
from producer.metrics import LEASE_TAKEOVERS
from producer.pipeline import next_stage
from producer.spec import JobSpec
from producer.stage_outputs import EarlierOutputs
from worker import heartbeat
from worker.queue import giving_way, handoff, measures
from worker.queue.claims import Claimed, Refusal, Refused
from worker.queue.commits import commit_stage, record_failure
from worker.queue.monitor import BULK_PROGRESS_INTERVAL_S, PROGRESS_INTERVAL_S, StageMonitor
from worker.queue.retry import Fail, FailureKind, decide
from worker.queue.selection import Batching, claim_companions, claim_next
from worker.stages import STAGES, Results, perform
from worker.stages.context import StageContext, StageResult, StageYielded
from worker.stages.runtime import Runtime, get_runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    status: str  # succeeded, aborted, failed or retrying
    # The next stages of the run's jobs, claimed to run here next, in order.
    chained: tuple[Claimed, ...] = ()


def run_stage(task: Task, stage: str, job_id: str) -> str:
    """Run ``stage`` of ``job_id`` once, and the job's next stages while they may run here.

    Returns what happened to ``stage`` (for logs and tests).
    """
    started = time.monotonic()
    runtime = get_runtime()
    claim = _claim(task, runtime, job_id, stage)
    if isinstance(claim, Refused):
        if claim.reason in (Refusal.BUSY, Refusal.WAITING, Refusal.ELSEWHERE):
            # A live lease elsewhere (look again when it would have expired), bulk work letting
            # compatible jobs catch up, or work for a model other hosts serve (its message goes
            # back to the queue, for one of them): without an attempt.
            raise task.retry(countdown=claim.retry_in, max_retries=None)
        log.info("job %s %s: not run (%s)", job_id, stage, claim.reason.value)
        return claim.reason.value
    outcome = _run_claimed(task, runtime, claim, started, chained=False)
    first, pending = outcome.status, list(outcome.chained)
    # Whether pending[0] was claimed by the run just before (the others have waited their turn).
    fresh = True
    renewed = time.monotonic()  # when the waiting claims' leases were taken or last renewed
    quarter = runtime.settings.stage_lease_seconds / 4  # as heartbeats renew a running one
    interactive_waits = giving_way.check(task, runtime)
    while pending:
        if len(pending) > 1 and interactive_waits():
            pending, fresh = giving_way.make_way(task, runtime, pending), True
            continue
        renew = len(pending) > 1 and time.monotonic() - renewed > quarter
        if renew or not fresh:
            pending = handoff.take_turn(runtime.settings, pending, restart=not fresh, renew=renew)
            renewed = time.monotonic() if renew else renewed
            if not pending:
                break
        outcome = _run_claimed(task, runtime, pending.pop(0), started, chained=True)
        pending[:0] = outcome.chained  # a job's own next stage before the other jobs'
        fresh = bool(outcome.chained)
    return first


def _run_claimed(
    task: Task, runtime: Runtime, claim: Claimed, started: float, *, chained: bool
) -> Outcome:
    job, stage = claim.job, claim.stage
    about = logs.work(
        job_id=job.id, stage=stage, attempt=claim.attempt, batch_id=job.batch_id, lane=job.lane
    )
    with about, heartbeat.running(job.id, stage):
        if claim.took_over:
            LEASE_TAKEOVERS.labels(stage).inc()
            _remove_partial_writes(runtime, claim)
        batch = _gather(runtime, claim)
        if STAGES[stage].batched:
            measures.batch_formed(batch)
        working = time.perf_counter()
        try:
            results = _work(task, runtime, batch)
        except Exception as exc:
            measures.ran(batch, time.perf_counter() - working, None)
            return _settle_failure(task, runtime, batch, exc, chained=chained)
        seconds = time.perf_counter() - working
        measures.ran(batch, seconds, results)
        log.info("%s ran in %.3f s (%d jobs)", stage, seconds, len(batch))
        chain = handoff.may_chain(task, runtime.settings, next_stage(stage), started)
        return _commit_and_hand_off(task, runtime, batch, results, chain=chain)


def _claim(task: Task, runtime: Runtime, job_id: str, stage: str) -> Claimed | Refused:
    """The run of ``stage`` the scheduler puts first (``job_id``: the job the message named)."""
    settings = runtime.settings
    batching = None
    if STAGES[stage].batched and settings.batch_max_images > 1:
        # Only bulk work waits for company: the batch it waits to fill is a bulk batch.
        batching = Batching(settings.batch_images("bulk"), settings.batch_wait_seconds)
    resident = runtime.resident_models()
    host = task.request.hostname  # as its registry rows name this worker
    claim = in_transaction(
        settings.resolved_database_url,
        lambda session: claim_next(
            session,
            stage,
            job_id,
            lease_seconds=settings.stage_lease_seconds,
            max_attempts=settings.stage_max_attempts,
            batching=batching,
            resident=resident,
            host=host,
        ),
    )
    notify(settings.resolved_redis_url, claim.job.id if isinstance(claim, Claimed) else job_id)
    return claim


def _remove_partial_writes(runtime: Runtime, claim: Claimed) -> None:
    # The lost worker may have died between writing a temporary file and renaming it.
    removed = runtime.store.remove_partial_writes(job_prefix(claim.job.id))
    if removed:
        log.info("job %s %s: removed %d partial writes", claim.job.id, claim.stage, removed)


def _gather(runtime: Runtime, claim: Claimed) -> list[Claimed]:
    """The run's jobs: ``claim``'s, and for a batched stage compatible jobs queued for it.

    Each companion is claimed, leased and committed on its own; its own message, when it comes,
    finds the stage done. After running out of memory, a job's retry runs alone.
    """
    settings = runtime.settings
    if not STAGES[claim.stage].batched or settings.batch_max_images <= 1 or claim.after_oom:
        return [claim]
    room = settings.batch_images(claim.job.lane) - JobSpec.model_validate(claim.job.spec).n
    companions = in_transaction(
        settings.resolved_database_url,
        lambda session: claim_companions(
            session,
            claim.job,
            claim.stage,
            images=room,
            lease_seconds=settings.stage_lease_seconds,
            max_attempts=settings.stage_max_attempts,
        ),
    )
    return [claim, *companions]


def _work(task: Task, runtime: Runtime, batch: list[Claimed]) -> Results:
    stage, after_oom = batch[0].stage, batch[0].after_oom
    bulk = all(claim.job.lane == "bulk" for claim in batch)
    monitor = StageMonitor(
        runtime.settings,
        stage,
        {claim.job.id: claim.token for claim in batch},
        progress_every=BULK_PROGRESS_INTERVAL_S if bulk else PROGRESS_INTERVAL_S,
    )
    # Bulk work gives way between denoising steps when interactive work waits.
    should_yield = giving_way.check(task, runtime) if bulk and STAGES[stage].batched else None
    contexts = [
        StageContext(
            job_id=claim.job.id,
            spec=JobSpec.model_validate(claim.job.spec),
            model=claim.job.model,
            input_image_uri=claim.job.input_image_uri,
            outputs=EarlierOutputs.from_stored(claim.outputs),
            runtime=runtime,
            on_step=monitor.on_step(claim.job.id),
            # After running out of accelerator memory, draw the images one at a time.
            max_batch=1 if after_oom else None,
            should_yield=should_yield,
        )
        for claim in batch
    ]
    with monitor:
        return perform(stage, contexts)


def _commit_and_hand_off(
    task: Task, runtime: Runtime, batch: list[Claimed], results: Results, *, chain: bool
) -> Outcome:
    """Commit each job of the run under its lease, then send or chain its next stage. Every job
    of a batch may chain: its companions' next stages then run here after the first job's, not
    as a message each (``run_stage`` hands them back when interactive work comes)."""
    settings = runtime.settings
    primary, status, chained = batch[0], "succeeded", []
    # Those that gave way first: the interactive work they gave way to waits on them.
    gave_way = [
        (claim, result.step)
        for claim in batch
        if isinstance(result := results[claim.job.id], StageYielded)
    ]
    if gave_way:
        giving_way.give_way(task, runtime, gave_way)
    if isinstance(results[primary.job.id], StageYielded):
        # This process is free now: the interactive work it gave way to runs here next.
        status, interactive = "yielded", giving_way.claim_interactive(task, runtime)
        chained = [interactive] if interactive is not None else []
        chain = False
    for claim in batch:
        result = results[claim.job.id]
        if isinstance(result, StageAborted):
            log.info("job %s %s: aborted (canceled or lease lost)", claim.job.id, claim.stage)
            status = "aborted" if claim is primary else status
            continue
        if isinstance(result, StageYielded):
            continue
        following = _commit(runtime, claim, result, chain=chain)
        notify(settings.resolved_redis_url, claim.job.id)
        if following is None:
            continue  # the job is done, or this worker was fenced out
        # Committed, so these are what the store holds for good: the next stage, if this
        # process runs it, takes them from memory.
        for uri, value in result.artifacts.items():
            runtime.handover.offer(uri, value)
        if following.claimed is not None:
            chained.append(following.claimed)
        else:
            handoff.send(settings.resolved_database_url, task.app, claim.job.id, following.stage)
    return Outcome(status, tuple(chained))


def _commit(
    runtime: Runtime, claim: Claimed, result: StageResult, *, chain: bool
) -> handoff.Next | None:
    settings = runtime.settings
    output = result.output.model_dump(mode="json")

    def commit(session: Session) -> handoff.Next | None:
        following = commit_stage(
            session, claim.job.id, claim.stage, claim.token, output, result.persist
        )
        if following is None:
            return None
        return handoff.hand_on(session, settings, claim.job.id, following, chain=chain)

    return in_transaction(settings.resolved_database_url, commit)


def _settle_failure(
    task: Task, runtime: Runtime, batch: list[Claimed], exc: Exception, *, chained: bool
) -> Outcome:
    """A failed run: its companions go back to their queue; the primary job fails, or its
    stage runs again after a backoff (a Celery retry, or a message when it was chained)."""
    primary = batch[0]
    decision = decide(exc, primary.attempt, runtime.settings.stage_max_attempts)
    log.warning(
        "job %s %s attempt %d failed (%s%s): %s\n%s",
        primary.job.id,
        primary.stage,
        primary.attempt,
        decision.kind.value,
        ", final" if isinstance(decision, Fail) else "",
        decision.reason,
        "".join(traceback.format_exception(exc)),
    )
    for companion in batch[1:]:
        _record(runtime, companion, decision.kind, decision.reason, final=False)
    if isinstance(decision, Fail):
        _record(runtime, primary, decision.kind, decision.reason, final=True)
        return Outcome("failed")
    if chained:
        # This task is the previous stage's, which is done: the retry is a message of its own.
        _record(runtime, primary, decision.kind, decision.reason, retry_in=decision.seconds)
        return Outcome("retrying")
    _record(runtime, primary, decision.kind, decision.reason, final=False)
    raise task.retry(countdown=decision.seconds, max_retries=None, exc=exc)


def _record(
    runtime: Runtime,
    claim: Claimed,
    kind: FailureKind,
    reason: str,
    *,
    final: bool = False,
    retry_in: float | None = None,
) -> None:
    job_id, stage = claim.job.id, claim.stage

    def record(session: Session) -> None:
        recorded = record_failure(
            session, job_id, stage, claim.token, kind.value, reason, final=final
        )
        if recorded and retry_in is not None:
            handoff.retry_later(session, job_id, stage, retry_in)

    in_transaction(runtime.settings.resolved_database_url, record)
    notify(runtime.settings.resolved_redis_url, job_id)
