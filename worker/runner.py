"""Run one stage of one job reliably: claim, work, commit under the lease, then enqueue the next.

This is the only place with the stage life cycle; the Celery tasks just call ``run_stage``.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

from celery import Task

from imggen.errors import StageAborted
from producer.db import session_scope
from producer.queue import enqueue_stage
from producer.spec import JobSpec
from worker.leases import ClaimOutcome, claim_stage, commit_stage, record_failure, renew_lease
from worker.retry import FailureKind, backoff_seconds, classify
from worker.runtime import Runtime, get_runtime
from worker.stages import STAGE_FUNCTIONS, StageContext

log = logging.getLogger(__name__)

# Progress is written at most this often: each write is a transaction.
PROGRESS_INTERVAL_S = 0.25


def run_stage(task: Task, stage: str, job_id: str) -> str:
    """Run ``stage`` of ``job_id`` once; returns what happened (for logs and tests)."""
    runtime = get_runtime()
    settings = runtime.settings
    db = settings.resolved_database_url

    # 1. Claim the stage: a lease token and one more attempt, or a reason not to run.
    with session_scope(db) as session:
        claim = claim_stage(
            session,
            job_id,
            stage,
            lease_seconds=settings.stage_lease_seconds,
            max_attempts=settings.stage_max_attempts,
        )
        job = claim.job
        spec = JobSpec.model_validate(job.spec) if job is not None else None
        model = job.model if job is not None else ""
        input_image_uri = job.input_image_uri if job is not None else None
    if claim.outcome is ClaimOutcome.BUSY:
        # A live lease elsewhere: look again when it would have expired, without an attempt.
        raise task.retry(countdown=claim.retry_in, max_retries=None)
    if claim.outcome is not ClaimOutcome.CLAIMED:
        log.info("job %s %s: not run (%s)", job_id, stage, claim.outcome.value)
        return claim.outcome.value
    assert claim.token is not None and spec is not None and claim.outputs is not None
    token = claim.token

    # 2. Do the work, reporting progress and watching for cancellation through the lease.
    context = StageContext(
        job_id=job_id,
        spec=spec,
        model=model,
        input_image_uri=input_image_uri,
        outputs=claim.outputs,
        runtime=runtime,
        on_step=_progress_reporter(runtime, job_id, stage, token),
    )
    try:
        result = STAGE_FUNCTIONS[stage](context)
    except StageAborted:
        log.info("job %s %s: aborted (canceled or lease lost)", job_id, stage)
        return "aborted"
    except Exception as exc:
        return _handle_failure(task, runtime, job_id, stage, token, claim.attempt, exc)

    # 3. Commit under the lease, then wake the next stage (only after the commit).
    with session_scope(db) as session:
        following = commit_stage(session, job_id, stage, token, result.output, result.persist)
    if following is not None:
        enqueue_stage(task.app, job_id, following)
    return "succeeded"


def _progress_reporter(runtime: Runtime, job_id: str, stage: str, token: str) -> Any:
    settings = runtime.settings
    last = 0.0

    def on_step(step: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if step < total and now - last < PROGRESS_INTERVAL_S:
            return
        last = now
        with session_scope(settings.resolved_database_url) as session:
            alive = renew_lease(
                session,
                job_id,
                stage,
                token,
                settings.stage_lease_seconds,
                progress_step=step,
                progress_total=total,
            )
        if not alive:
            raise StageAborted(f"job {job_id} {stage}: canceled or lease lost")

    return on_step


def _handle_failure(
    task: Task, runtime: Runtime, job_id: str, stage: str, token: str, attempt: int, exc: Exception
) -> str:
    settings = runtime.settings
    kind = classify(exc)
    final = kind is FailureKind.INVALID or attempt >= settings.stage_max_attempts
    message = f"{type(exc).__name__}: {exc}"
    log.warning(
        "job %s %s attempt %d failed (%s%s): %s\n%s",
        job_id,
        stage,
        attempt,
        kind.value,
        ", final" if final else "",
        message,
        "".join(traceback.format_exception(exc)),
    )
    with session_scope(settings.resolved_database_url) as session:
        record_failure(session, job_id, stage, token, kind.value, message, final=final)
    if final:
        return "failed"
    raise task.retry(countdown=backoff_seconds(attempt), max_retries=None, exc=exc)
