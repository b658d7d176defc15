"""Run one stage of one job reliably: claim, work, commit under the lease, then publish the next
(or, when this process serves the next stage's queue, claim it in the commit and run it here).

This is the only place with the stage life cycle; the Celery tasks just call ``run_stage``.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable

from celery import Task
from sqlalchemy.orm import Session

from imggen.errors import StageAborted
from producer.artifacts import job_prefix
from producer.db import in_transaction
from producer.events import notify
from producer.outbox import add_message, publish_now
from producer.pipeline import next_stage, queue_name
from producer.settings import Settings
from producer.spec import JobSpec
from worker.denoising import denoise_jobs
from worker.leases import (
    Claim,
    ClaimOutcome,
    claim_companions,
    claim_stage,
    commit_stage,
    record_failure,
)
from worker.monitor import StageMonitor
from worker.retry import FINAL_KINDS, FailureKind, backoff_seconds, classify
from worker.runtime import Runtime, get_runtime
from worker.stages import STAGE_FUNCTIONS, StageContext, StageResult

log = logging.getLogger(__name__)

# Stages that run several compatible jobs at once.
BATCHED_STAGES: dict[str, Callable[[list[StageContext]], dict[str, StageResult | StageAborted]]] = {
    "denoise": denoise_jobs,
}


# A chained stage runs inside the Celery task of the stage before it, so under that task's time
# limit: chain only while the task has used a tenth of it, leaving the next stage the rest.
CHAIN_BUDGET = 0.1


def run_stage(task: Task, stage: str, job_id: str) -> str:
    """Run ``stage`` of ``job_id`` once, and the job's next stages while they may run here.

    Returns what happened to ``stage`` (for logs and tests).
    """
    started = time.monotonic()
    runtime = get_runtime()
    settings = runtime.settings

    # 1. Claim the stage: a lease token and one more attempt, or a reason not to run.
    claim = in_transaction(
        settings.resolved_database_url,
        lambda session: claim_stage(
            session,
            job_id,
            stage,
            lease_seconds=settings.stage_lease_seconds,
            max_attempts=settings.stage_max_attempts,
        ),
    )
    notify(settings.resolved_redis_url, job_id)
    if claim.outcome is ClaimOutcome.BUSY:
        # A live lease elsewhere: look again when it would have expired, without an attempt.
        raise task.retry(countdown=claim.retry_in, max_retries=None)
    if claim.outcome is not ClaimOutcome.CLAIMED:
        log.info("job %s %s: not run (%s)", job_id, stage, claim.outcome.value)
        return claim.outcome.value

    outcome, chained = _run_claimed(task, runtime, stage, job_id, claim, started, chained=False)
    while chained is not None:
        # The commit claimed the next stage too: run it here, with no message in between.
        stage, claim = chained
        _, chained = _run_claimed(task, runtime, stage, job_id, claim, started, chained=True)
    return outcome


def _runs_here(task: Task, settings: Settings, stage: str, started: float) -> bool:
    """Whether this process runs ``stage`` right after the stage before, instead of sending it."""
    if not settings.chain_stages:
        return False
    if stage in BATCHED_STAGES and settings.batch_max_images > 1:
        return False  # compatible jobs gather in its queue, to share a batch
    if queue_name(stage) not in task.app.amqp.queues.consume_from:
        return False  # the deployment gives that stage workers of its own (-Q)
    return time.monotonic() - started < CHAIN_BUDGET * settings.stage_time_limit_seconds


def _run_claimed(
    task: Task,
    runtime: Runtime,
    stage: str,
    job_id: str,
    claim: Claim,
    started: float,
    *,
    chained: bool,
) -> tuple[str, tuple[str, Claim] | None]:
    """Work, commit and publish one claimed stage; returns what happened, and the job's next
    stage with its claim when the commit took it for this process."""
    settings = runtime.settings
    db = settings.resolved_database_url
    assert claim.job is not None
    if claim.took_over:
        # The lost worker may have died between writing a temporary file and renaming it.
        removed = runtime.store.remove_partial_writes(job_prefix(job_id))
        if removed:
            log.info("job %s %s: removed %d partial writes", job_id, stage, removed)
    primary = claim.job
    claims = {job_id: claim}
    oom_before = claim.previous_error_kind == FailureKind.OOM.value
    if stage in BATCHED_STAGES and settings.batch_max_images > 1 and not oom_before:
        # Compatible jobs queued for the same stage join this run (their own messages, when
        # they come, find the stage done; unsent ones are dropped). Each is claimed, leased and
        # committed on its own.
        room = settings.batch_max_images - JobSpec.model_validate(primary.spec).n
        claims |= in_transaction(
            db,
            lambda session: claim_companions(
                session,
                primary,
                stage,
                images=room,
                lease_seconds=settings.stage_lease_seconds,
                max_attempts=settings.stage_max_attempts,
            ),
        )
    tokens = {jid: c.token for jid, c in claims.items() if c.token is not None}
    monitor = StageMonitor(runtime, stage, tokens)
    contexts = [
        _context(runtime, jid, c, monitor.on_step(jid), oom_before) for jid, c in claims.items()
    ]

    # 2. Do the work while the monitor renews the leases, shows progress and notes cancellation.
    try:
        with monitor:
            results = _run(stage, contexts)
    except Exception as exc:
        for companion in contexts[1:]:
            _record(runtime, companion.job_id, stage, tokens[companion.job_id], exc, final=False)
        outcome = _handle_failure(
            task, runtime, job_id, stage, tokens[job_id], claim.attempt, exc, chained=chained
        )
        return outcome, None

    # 3. Commit each job under its lease (with its next stage's message, or the next stage's
    # claim when this process runs it), then publish.
    following_stage = next_stage(stage)
    chain = following_stage is not None and _runs_here(task, settings, following_stage, started)
    outcome, chained_next = "succeeded", None
    for jid, result in results.items():
        if isinstance(result, StageAborted):
            log.info("job %s %s: aborted (canceled or lease lost)", jid, stage)
            outcome = "aborted" if jid == job_id else outcome
            continue
        following, next_claim = in_transaction(
            db, _committer(settings, jid, stage, tokens[jid], result, chain=chain and jid == job_id)
        )
        notify(settings.resolved_redis_url, jid)
        if following is None:
            continue
        # Committed, so these are what the store holds for good: the next stage, if this
        # process runs it, takes them from memory.
        for uri, value in result.artifacts.items():
            runtime.handover.offer(uri, value)
        if next_claim is not None:
            chained_next = (following, next_claim)
            continue
        try:
            publish_now(db, task.app, jid, following)
        except Exception:  # noqa: BLE001 - the relay will send it
            log.warning("job %s: %s message left to the relay", jid, following, exc_info=True)
    return outcome, chained_next


def _committer(
    settings: Settings, job_id: str, stage: str, token: str, result: StageResult, *, chain: bool
) -> Callable[[Session], tuple[str | None, Claim | None]]:
    def commit(session: Session) -> tuple[str | None, Claim | None]:
        following = commit_stage(
            session, job_id, stage, token, result.output, result.persist, enqueue=not chain
        )
        if following is None or not chain:
            return following, None
        # One transaction: if this process dies before the next stage commits, that stage's
        # lease runs out and the sweeper sends it again, as for any stage lost mid-run.
        claim = claim_stage(
            session,
            job_id,
            following,
            lease_seconds=settings.stage_lease_seconds,
            max_attempts=settings.stage_max_attempts,
        )
        if claim.outcome is ClaimOutcome.CLAIMED:
            return following, claim
        add_message(session, job_id, following)  # not runnable here after all: send it
        return following, None

    return commit


def _context(
    runtime: Runtime,
    job_id: str,
    claim: Claim,
    on_step: Callable[[int, int], None],
    oom_before: bool,
) -> StageContext:
    assert claim.token is not None and claim.job is not None and claim.outputs is not None
    return StageContext(
        job_id=job_id,
        spec=JobSpec.model_validate(claim.job.spec),
        model=claim.job.model,
        input_image_uri=claim.job.input_image_uri,
        outputs=claim.outputs,
        runtime=runtime,
        on_step=on_step,
        # After running out of accelerator memory, draw the images one at a time.
        max_batch=1 if oom_before else None,
    )


def _run(stage: str, contexts: list[StageContext]) -> dict[str, StageResult | StageAborted]:
    try:
        if stage in BATCHED_STAGES:
            return BATCHED_STAGES[stage](contexts)
        (context,) = contexts
        return {context.job_id: STAGE_FUNCTIONS[stage](context)}
    except StageAborted as aborted:  # every job of the run was canceled (or lost its lease)
        return {context.job_id: aborted for context in contexts}


def _record(
    runtime: Runtime,
    job_id: str,
    stage: str,
    token: str,
    exc: Exception,
    *,
    final: bool,
    retry_in: float | None = None,
) -> None:
    kind = classify(exc)
    message = f"{type(exc).__name__}: {exc}"
    in_transaction(
        runtime.settings.resolved_database_url,
        lambda session: record_failure(
            session, job_id, stage, token, kind.value, message, final=final, retry_in=retry_in
        ),
    )
    notify(runtime.settings.resolved_redis_url, job_id)


def _handle_failure(
    task: Task,
    runtime: Runtime,
    job_id: str,
    stage: str,
    token: str,
    attempt: int,
    exc: Exception,
    *,
    chained: bool,
) -> str:
    kind = classify(exc)
    final = kind in FINAL_KINDS or attempt >= runtime.settings.stage_max_attempts
    log.warning(
        "job %s %s attempt %d failed (%s%s): %s: %s\n%s",
        job_id,
        stage,
        attempt,
        kind.value,
        ", final" if final else "",
        type(exc).__name__,
        exc,
        "".join(traceback.format_exception(exc)),
    )
    if final:
        _record(runtime, job_id, stage, token, exc, final=True)
        return "failed"
    if chained:
        # This task is the previous stage's, which is done: the retry is a message of its own,
        # written with the failure and sent by the relay once the backoff is over.
        _record(runtime, job_id, stage, token, exc, final=False, retry_in=backoff_seconds(attempt))
        return "retrying"
    _record(runtime, job_id, stage, token, exc, final=False)
    raise task.retry(countdown=backoff_seconds(attempt), max_retries=None, exc=exc)
