"""Run one stage of one job reliably: claim, work, commit under the lease, then publish the next.

This is the only place with the stage life cycle; the Celery tasks just call ``run_stage``.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from celery import Task
from sqlalchemy.orm import Session

from imggen.errors import StageAborted
from producer.artifacts import job_prefix
from producer.db import in_transaction, session_scope
from producer.events import notify
from producer.outbox import publish_pending
from producer.spec import JobSpec
from worker.denoising import denoise_jobs
from worker.leases import (
    Claim,
    ClaimOutcome,
    claim_companions,
    claim_stage,
    commit_stage,
    record_failure,
    renew_lease,
)
from worker.retry import FailureKind, backoff_seconds, classify
from worker.runtime import Runtime, get_runtime
from worker.stages import STAGE_FUNCTIONS, StageContext, StageResult

log = logging.getLogger(__name__)

# Progress is written at most this often: each write is a transaction.
PROGRESS_INTERVAL_S = 0.25

# Stages that run several compatible jobs at once.
BATCHED_STAGES: dict[str, Callable[[list[StageContext]], dict[str, StageResult | StageAborted]]] = {
    "denoise": denoise_jobs,
}


def run_stage(task: Task, stage: str, job_id: str) -> str:
    """Run ``stage`` of ``job_id`` once; returns what happened (for logs and tests)."""
    runtime = get_runtime()
    settings = runtime.settings
    db = settings.resolved_database_url

    # 1. Claim the stage: a lease token and one more attempt, or a reason not to run.
    claim = in_transaction(
        db,
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
        # they come, find the stage done). Each is claimed, leased and committed on its own.
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
    contexts = [_context(runtime, jid, stage, c, oom_before) for jid, c in claims.items()]
    tokens = {jid: c.token for jid, c in claims.items() if c.token is not None}

    # 2. Do the work under a heartbeat, reporting progress and watching for cancellation.
    try:
        with _heartbeat(runtime, stage, tokens):
            results = _run(stage, contexts)
    except Exception as exc:
        for companion in contexts[1:]:
            _record(runtime, companion.job_id, stage, tokens[companion.job_id], exc, final=False)
        return _handle_failure(task, runtime, job_id, stage, tokens[job_id], claim.attempt, exc)

    # 3. Commit each job under its lease (with its next stage's message), then publish.
    outcome = "succeeded"
    for jid, result in results.items():
        if isinstance(result, StageAborted):
            log.info("job %s %s: aborted (canceled or lease lost)", jid, stage)
            outcome = "aborted" if jid == job_id else outcome
            continue
        following = in_transaction(db, _committer(jid, stage, tokens[jid], result))
        notify(settings.resolved_redis_url, jid)
        if following is not None:
            try:
                publish_pending(db, task.app, job_id=jid)
            except Exception:  # noqa: BLE001 - the relay will send it
                log.warning("job %s: %s message left to the relay", jid, following, exc_info=True)
    return outcome


def _committer(
    job_id: str, stage: str, token: str, result: StageResult
) -> Callable[[Session], str | None]:
    def commit(session: Session) -> str | None:
        return commit_stage(session, job_id, stage, token, result.output, result.persist)

    return commit


def _context(
    runtime: Runtime, job_id: str, stage: str, claim: Claim, oom_before: bool
) -> StageContext:
    assert claim.token is not None and claim.job is not None and claim.outputs is not None
    return StageContext(
        job_id=job_id,
        spec=JobSpec.model_validate(claim.job.spec),
        model=claim.job.model,
        input_image_uri=claim.job.input_image_uri,
        outputs=claim.outputs,
        runtime=runtime,
        on_step=_progress_reporter(runtime, job_id, stage, claim.token),
        # After running out of accelerator memory, draw the images one at a time.
        max_batch=1 if oom_before else None,
    )


def _run(stage: str, contexts: list[StageContext]) -> dict[str, StageResult | StageAborted]:
    if stage in BATCHED_STAGES:
        return BATCHED_STAGES[stage](contexts)
    (context,) = contexts
    try:
        return {context.job_id: STAGE_FUNCTIONS[stage](context)}
    except StageAborted as aborted:
        return {context.job_id: aborted}


@contextmanager
def _heartbeat(runtime: Runtime, stage: str, tokens: dict[str, str]) -> Iterator[None]:
    """Renew the leases (one per job) every quarter of their length while the stage runs.

    A stage that is alive keeps its lease however long it takes; a killed one loses it within
    one lease length, and the sweeper hands the stage to another worker.
    """
    settings = runtime.settings
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(settings.stage_lease_seconds / 4):
            try:
                # Fenced out or canceled: renewal fails, and the progress check stops the work.
                with session_scope(settings.resolved_database_url) as session:
                    for job_id, token in tokens.items():
                        renew_lease(session, job_id, stage, token, settings.stage_lease_seconds)
            except Exception:  # noqa: BLE001 - a lost connection: try again next beat
                log.warning("lease heartbeat failed for %s", stage, exc_info=True)

    thread = threading.Thread(target=beat, name=f"lease-{stage}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _progress_reporter(
    runtime: Runtime, job_id: str, stage: str, token: str
) -> Callable[[int, int], None]:
    settings = runtime.settings
    last = 0.0

    def on_step(step: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if step < total and now - last < PROGRESS_INTERVAL_S:
            return
        last = now
        alive = in_transaction(
            settings.resolved_database_url,
            lambda session: renew_lease(
                session,
                job_id,
                stage,
                token,
                settings.stage_lease_seconds,
                progress_step=step,
                progress_total=total,
            ),
        )
        notify(settings.resolved_redis_url, job_id)
        if not alive:
            raise StageAborted(f"job {job_id} {stage}: canceled or lease lost")

    return on_step


def _record(
    runtime: Runtime, job_id: str, stage: str, token: str, exc: Exception, *, final: bool
) -> None:
    kind = classify(exc)
    message = f"{type(exc).__name__}: {exc}"
    in_transaction(
        runtime.settings.resolved_database_url,
        lambda session: record_failure(
            session, job_id, stage, token, kind.value, message, final=final
        ),
    )
    notify(runtime.settings.resolved_redis_url, job_id)


def _handle_failure(
    task: Task, runtime: Runtime, job_id: str, stage: str, token: str, attempt: int, exc: Exception
) -> str:
    kind = classify(exc)
    final = kind is FailureKind.INVALID or attempt >= runtime.settings.stage_max_attempts
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
    _record(runtime, job_id, stage, token, exc, final=final)
    if final:
        return "failed"
    raise task.retry(countdown=backoff_seconds(attempt), max_retries=None, exc=exc)
