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

from imggen.errors import StageAborted
from producer.db import in_transaction, session_scope
from producer.events import notify
from producer.outbox import publish_pending
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
    assert claim.token is not None and claim.job is not None and claim.outputs is not None
    token = claim.token

    # 2. Do the work under a heartbeat, reporting progress and watching for cancellation.
    context = StageContext(
        job_id=job_id,
        spec=JobSpec.model_validate(claim.job.spec),
        model=claim.job.model,
        input_image_uri=claim.job.input_image_uri,
        outputs=claim.outputs,
        runtime=runtime,
        on_step=_progress_reporter(runtime, job_id, stage, token),
        # After running out of accelerator memory, draw the images one at a time.
        max_batch=1 if claim.previous_error_kind == FailureKind.OOM.value else None,
    )
    try:
        with _heartbeat(runtime, job_id, stage, token):
            result = STAGE_FUNCTIONS[stage](context)
    except StageAborted:
        log.info("job %s %s: aborted (canceled or lease lost)", job_id, stage)
        return "aborted"
    except Exception as exc:
        return _handle_failure(task, runtime, job_id, stage, token, claim.attempt, exc)

    # 3. Commit under the lease (with the next stage's message), then publish that message.
    following = in_transaction(
        db,
        lambda session: commit_stage(session, job_id, stage, token, result.output, result.persist),
    )
    notify(settings.resolved_redis_url, job_id)
    if following is not None:
        try:
            publish_pending(db, task.app, job_id=job_id)
        except Exception:  # noqa: BLE001 - the relay will send it
            log.warning("job %s: %s message left to the relay", job_id, following, exc_info=True)
    return "succeeded"


@contextmanager
def _heartbeat(runtime: Runtime, job_id: str, stage: str, token: str) -> Iterator[None]:
    """Renew the lease every quarter of its length while the stage runs.

    A stage that is alive keeps its lease however long it takes; a killed one loses it within
    one lease length, and the sweeper hands the stage to another worker.
    """
    settings = runtime.settings
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(settings.stage_lease_seconds / 4):
            try:
                with session_scope(settings.resolved_database_url) as session:
                    if not renew_lease(session, job_id, stage, token, settings.stage_lease_seconds):
                        return  # fenced out or canceled: the progress check stops the work
            except Exception:  # noqa: BLE001 - a lost connection: try again next beat
                log.warning("lease heartbeat failed for job %s %s", job_id, stage, exc_info=True)

    thread = threading.Thread(target=beat, name=f"lease-{job_id[:8]}-{stage}", daemon=True)
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
    in_transaction(
        settings.resolved_database_url,
        lambda session: record_failure(
            session, job_id, stage, token, kind.value, message, final=final
        ),
    )
    notify(settings.resolved_redis_url, job_id)
    if final:
        return "failed"
    raise task.retry(countdown=backoff_seconds(attempt), max_retries=None, exc=exc)
