"""Who may run a stage, and whose result counts: claims, leases, fenced commits.

A worker *claims* a stage with a conditional UPDATE that sets a fresh lease token. Every later
write (progress, errors, the result) is conditional on that token, so if the lease expired and
another worker re-claimed the stage, the first one can no longer commit: a stage redelivered while
still running is done once. The attempt counter lives here too, in SQL, so a job that kills its
worker every time ends failed instead of looping.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, Text, bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from producer.jobs import finish_job
from producer.models import ACTIVE, Job, JobStatus, OutboxMessage, StageRun, StageStatus, utcnow
from producer.outbox import add_message
from producer.pipeline import next_stage
from producer.webhooks import add_delivery

_ACTIVE_VALUES = [status.value for status in ACTIVE]


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"
    DONE = "done"  # the stage already succeeded: a duplicate message
    ENDED = "ended"  # the job is already terminal (canceled, failed)
    BUSY = "busy"  # another worker holds a live lease: try again after it expires
    EXHAUSTED = "exhausted"  # no attempts left: the job has been failed
    NOT_READY = "not_ready"  # an earlier stage has not finished: a stray message


@dataclass(frozen=True)
class ClaimedJob:
    """What a stage needs of its job, read by the claim's own statement (no ORM load)."""

    id: str
    model: str
    spec: dict[str, Any]
    input_image_uri: str | None
    batch_key: str | None


@dataclass
class Claim:
    outcome: ClaimOutcome
    token: str | None = None
    attempt: int = 0
    retry_in: float = 0.0
    job: ClaimedJob | None = None
    outputs: dict[str, dict[str, Any]] | None = None
    previous_error_kind: str | None = None  # how the last attempt failed ("oom", …)
    took_over: bool = False  # from a worker whose lease ran out (it may have left partial files)


# Claims, renewals and commits run for every stage of every job: Core statements built once,
# run on the session's connection with parameters. No ORM loads, identity map or flush, and no
# statement construction per call (together most of the queue's cost per job on a CPU).
_RUNNING, _QUEUED = StageStatus.RUNNING.value, StageStatus.QUEUED.value
_job_is_active = Job.status.in_(_ACTIVE_VALUES)
_this_run = (StageRun.job_id == bindparam("job")) & (StageRun.stage == bindparam("stage_name"))

_READ_RUNS = select(StageRun.stage, StageRun.status, StageRun.attempts, StageRun.output).where(
    StageRun.job_id == bindparam("job")
)
# Queued, or running on a lease that ran out; attempts left; the job still active.
_CLAIM_RUN = (
    update(StageRun)
    .where(
        _this_run,
        StageRun.attempts < bindparam("max_attempts"),
        (StageRun.status == _QUEUED)
        | ((StageRun.status == _RUNNING) & (StageRun.lease_expires_at < bindparam("now"))),
        StageRun.job_id.in_(select(Job.id).where(_job_is_active)),
    )
    .values(
        status=_RUNNING,
        attempts=StageRun.attempts + 1,
        lease_token=bindparam("token"),
        lease_expires_at=bindparam("expires"),
        started_at=bindparam("now"),
        # Set only when taking over from a lost worker; otherwise the last error stays.
        error=func.coalesce(bindparam("lost_error", type_=Text), StageRun.error),
        error_kind=func.coalesce(bindparam("lost_kind", type_=String), StageRun.error_kind),
    )
    .returning(StageRun.attempts, StageRun.error_kind)
)
# Still conditional on the job being active: a cancel may have committed since the claim read
# it, and must not be overwritten.
_START_JOB_STAGE = (
    update(Job)
    .where(Job.id == bindparam("job"), _job_is_active)
    .values(
        status=JobStatus.RUNNING.value,
        started_at=func.coalesce(Job.started_at, bindparam("now")),
        stage=bindparam("claimed_stage"),
        progress_step=None,
        progress_total=None,
        updated_at=bindparam("now"),
    )
    .returning(Job.id, Job.model, Job.spec, Job.input_image_uri, Job.batch_key)
)


def claim_stage(
    session: Session, job_id: str, stage: str, *, lease_seconds: float, max_attempts: int
) -> Claim:
    """Try to take the lease on ``stage`` of ``job_id``."""
    now = utcnow()
    token = uuid.uuid4().hex
    connection = session.connection()
    # One read of the job's stage runs serves the take-over check and the earlier outputs.
    runs = {row.stage: row for row in connection.execute(_READ_RUNS, {"job": job_id})}
    run = runs.get(stage)
    if run is None:
        return Claim(ClaimOutcome.ENDED)  # no such job (deleted) or stage
    # A running stage whose lease ran out lost its worker (killed, or cut off from the database).
    lost = run.status == _RUNNING
    claimed = connection.execute(
        _CLAIM_RUN,
        {
            "job": job_id,
            "stage_name": stage,
            "max_attempts": max_attempts,
            "now": now,
            "token": token,
            "expires": now + timedelta(seconds=lease_seconds),
            "lost_error": f"attempt {run.attempts}: worker lost (lease expired)" if lost else None,
            "lost_kind": "worker_lost" if lost else None,
        },
    ).one_or_none()
    if claimed is None:
        return _why_not_claimed(session, job_id, stage, now, max_attempts)
    job = connection.execute(
        _START_JOB_STAGE, {"job": job_id, "claimed_stage": stage, "now": now}
    ).one_or_none()
    if job is None:
        return Claim(ClaimOutcome.ENDED)
    return Claim(
        ClaimOutcome.CLAIMED,
        token,
        claimed.attempts,
        job=ClaimedJob(*job),
        outputs={name: row.output or {} for name, row in runs.items()},
        previous_error_kind=claimed.error_kind,
        took_over=lost,
    )


def _why_not_claimed(
    session: Session, job_id: str, stage: str, now: datetime, max_attempts: int
) -> Claim:
    job, run = session.get(Job, job_id), _stage_run(session, job_id, stage)
    if job is None or run is None or job.status not in _ACTIVE_VALUES:
        return Claim(ClaimOutcome.ENDED)
    if run.status == StageStatus.SUCCEEDED.value:
        return Claim(ClaimOutcome.DONE)
    if run.status == StageStatus.PENDING.value:
        return Claim(ClaimOutcome.NOT_READY)
    if run.attempts >= max_attempts:
        reason = f"{run.stage}: gave up after {run.attempts} attempts; last error: {run.error}"
        run.status = StageStatus.FAILED.value
        finish_job(session, job.id, JobStatus.FAILED, reason)
        return Claim(ClaimOutcome.EXHAUSTED)
    expires = run.lease_expires_at or now
    return Claim(ClaimOutcome.BUSY, retry_in=max((expires - now).total_seconds(), 0.0) + 1.0)


def claim_companions(
    session: Session,
    primary: ClaimedJob,
    stage: str,
    *,
    images: int,
    lease_seconds: float,
    max_attempts: int,
) -> dict[str, Claim]:
    """Claim other jobs queued for ``stage`` that can share a batch with ``primary``.

    At most ``images`` images in all, oldest first. A job another worker claims first is
    skipped (the conditional UPDATE in ``claim_stage`` decides).
    """
    candidates = session.execute(
        select(StageRun.job_id, Job.spec)
        .join(Job, Job.id == StageRun.job_id)
        .where(
            StageRun.stage == stage,
            StageRun.status == StageStatus.QUEUED.value,
            Job.batch_key == primary.batch_key,
            Job.status.in_(_ACTIVE_VALUES),
            Job.id != primary.id,
        )
        .order_by(StageRun.enqueued_at)
        .limit(max(images, 0))
    ).all()
    claims: dict[str, Claim] = {}
    for job_id, spec in candidates:
        if spec["n"] > images:
            continue
        claim = claim_stage(
            session, job_id, stage, lease_seconds=lease_seconds, max_attempts=max_attempts
        )
        if claim.outcome is ClaimOutcome.CLAIMED:
            claims[job_id] = claim
            images -= spec["n"]
    if claims:
        # A companion's message that has not gone yet (the broker was down) need not go at all:
        # its stage is under a lease now, and the sweeper sends it again if this worker is lost.
        session.connection().execute(
            delete(OutboxMessage).where(
                OutboxMessage.job_id.in_(list(claims)), OutboxMessage.stage == stage
            )
        )
    return claims


_RENEW_RUN = (
    update(StageRun)
    .where(_this_run, StageRun.lease_token == bindparam("token"))
    .values(lease_expires_at=bindparam("expires"))
)
_TOUCH_JOB = (
    update(Job)
    .where(Job.id == bindparam("job"), _job_is_active)
    .values(updated_at=bindparam("now"))
)
_TOUCH_JOB_PROGRESS = _TOUCH_JOB.values(
    progress_step=bindparam("step"), progress_total=bindparam("total")
)


def renew_lease(
    session: Session,
    job_id: str,
    stage: str,
    token: str,
    lease_seconds: float,
    progress: tuple[int, int] | None = None,
) -> bool:
    """Extend the lease and record ``progress`` (step, total); False if the lease was lost or
    the job ended."""
    now = utcnow()
    connection = session.connection()
    renewed = connection.execute(
        _RENEW_RUN,
        {
            "job": job_id,
            "stage_name": stage,
            "token": token,
            "expires": now + timedelta(seconds=lease_seconds),
        },
    ).rowcount
    if not renewed:
        return False
    if progress is None:
        touched = connection.execute(_TOUCH_JOB, {"job": job_id, "now": now})
    else:
        step, total = progress
        touched = connection.execute(
            _TOUCH_JOB_PROGRESS, {"job": job_id, "now": now, "step": step, "total": total}
        )
    return bool(touched.rowcount)


# Lock the job row first: a concurrent cancel and this commit then happen one after the other.
# The run's row too: a take-over claim arriving meanwhile waits, then finds the stage done.
_LOCK_FOR_COMMIT = (
    select(Job.status, Job.spec, StageRun.lease_token, StageRun.started_at)
    .join(StageRun, StageRun.job_id == Job.id)
    .where(Job.id == bindparam("job"), StageRun.stage == bindparam("stage_name"))
    .with_for_update(of=[Job, StageRun])
)
_FINISH_RUN = (
    update(StageRun)
    .where(_this_run)
    .values(
        status=StageStatus.SUCCEEDED.value,
        output=bindparam("result", type_=StageRun.output.type),
        lease_token=None,
        lease_expires_at=None,
        finished_at=bindparam("now"),
        duration_s=bindparam("duration"),
        error=None,
        error_kind=None,
    )
)
# sent_at now, not after the publish: saves the publish a write. Until the message has gone its
# outbox row exists, and the sweeper leaves alone a stage that has one.
_QUEUE_RUN = (
    update(StageRun)
    .where(_this_run)
    .values(status=_QUEUED, enqueued_at=bindparam("now"), sent_at=bindparam("now"))
)
_MOVE_JOB = (
    update(Job)
    .where(Job.id == bindparam("job"))
    .values(
        stage=bindparam("next_stage"),
        progress_step=None,
        progress_total=None,
        updated_at=bindparam("now"),
    )
)


def commit_stage(
    session: Session,
    job_id: str,
    stage: str,
    token: str,
    output: dict[str, Any],
    persist: Callable[[Session, str], None] | None = None,
    *,
    enqueue: bool = True,
) -> str | None:
    """Record the stage's result if this worker still holds the lease and the job is active.

    Marks the next stage queued (or the job succeeded after the last one) in the same
    transaction. Returns the stage to enqueue next, or None (nothing next, or fenced out).
    ``persist(session, job_id)`` adds the stage's own rows (images, metrics) to the transaction.
    ``enqueue=False`` leaves out the next stage's outbox message: the caller claims that stage
    in this same transaction (or adds the message itself).
    """
    now = utcnow()
    connection = session.connection()
    current = connection.execute(
        _LOCK_FOR_COMMIT, {"job": job_id, "stage_name": stage}
    ).one_or_none()
    if current is None or current.status not in _ACTIVE_VALUES or current.lease_token != token:
        return None
    started = current.started_at
    connection.execute(
        _FINISH_RUN,
        {
            "job": job_id,
            "stage_name": stage,
            "result": output,
            "now": now,
            "duration": (now - started).total_seconds() if started else None,
        },
    )
    if persist is not None:
        persist(session, job_id)
    add_delivery(
        session,
        job_id,
        current.spec,
        "job.stage",
        lambda: {"id": job_id, "stage": stage, "status": "succeeded"},
    )
    following = next_stage(stage)
    if following is None:
        finish_job(session, job_id, JobStatus.SUCCEEDED)
        return None
    connection.execute(_QUEUE_RUN, {"job": job_id, "stage_name": following, "now": now})
    connection.execute(_MOVE_JOB, {"job": job_id, "next_stage": following, "now": now})
    if enqueue:
        add_message(session, job_id, following)
    return following


def record_failure(
    session: Session,
    job_id: str,
    stage: str,
    token: str,
    kind: str,
    error: str,
    *,
    final: bool,
    retry_in: float | None = None,
) -> None:
    """Store why an attempt failed and give the lease back (to the retry, unless ``final``).

    ``retry_in``: also queue the retry's message in the outbox, due in that many seconds (for a
    stage that has no Celery task of its own to retry: one run after the previous stage).
    """
    run = _stage_run(session, job_id, stage)
    if run is None or run.lease_token != token:
        return
    run.error, run.error_kind = error, kind
    run.lease_token, run.lease_expires_at = None, None
    run.status = (StageStatus.FAILED if final else StageStatus.QUEUED).value
    if final:
        finish_job(session, job_id, JobStatus.FAILED, f"{stage}: {error}")
    elif retry_in is not None:
        add_message(session, job_id, stage, due=utcnow() + timedelta(seconds=retry_in))


def _stage_run(session: Session, job_id: str, stage: str) -> StageRun | None:
    return session.scalars(
        select(StageRun).where(StageRun.job_id == job_id, StageRun.stage == stage)
    ).one_or_none()
