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

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from producer.jobs import finish_job
from producer.models import ACTIVE, Job, JobStatus, StageRun, StageStatus, utcnow
from producer.outbox import add_message
from producer.pipeline import STAGES, next_stage
from producer.webhooks import add_delivery

_ACTIVE_VALUES = [status.value for status in ACTIVE]


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"
    DONE = "done"  # the stage already succeeded: a duplicate message
    ENDED = "ended"  # the job is already terminal (canceled, failed)
    BUSY = "busy"  # another worker holds a live lease: try again after it expires
    EXHAUSTED = "exhausted"  # no attempts left: the job has been failed
    NOT_READY = "not_ready"  # an earlier stage has not finished: a stray message


@dataclass
class Claim:
    outcome: ClaimOutcome
    token: str | None = None
    attempt: int = 0
    retry_in: float = 0.0
    job: Job | None = None
    outputs: dict[str, dict[str, Any]] | None = None
    previous_error_kind: str | None = None  # how the last attempt failed ("oom", …)
    took_over: bool = False  # from a worker whose lease ran out (it may have left partial files)


def claim_stage(
    session: Session, job_id: str, stage: str, *, lease_seconds: float, max_attempts: int
) -> Claim:
    """Try to take the lease on ``stage`` of ``job_id``."""
    now = utcnow()
    token = uuid.uuid4().hex
    # One read of the job's stage runs serves the take-over check and the earlier outputs.
    runs = _stage_runs(session, job_id)
    run = next((r for r in runs if r.stage == stage), None)
    # A running stage whose lease ran out lost its worker (killed, or cut off from the database).
    lost = run is not None and run.status == StageStatus.RUNNING.value
    claimed = session.scalars(
        update(StageRun)
        .where(
            StageRun.job_id == job_id,
            StageRun.stage == stage,
            StageRun.attempts < max_attempts,
            (StageRun.status == StageStatus.QUEUED.value)
            | ((StageRun.status == StageStatus.RUNNING.value) & (StageRun.lease_expires_at < now)),
            StageRun.job_id.in_(select(Job.id).where(Job.status.in_(_ACTIVE_VALUES))),
        )
        .values(
            status=StageStatus.RUNNING.value,
            attempts=StageRun.attempts + 1,
            lease_token=token,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=now,
        )
        # RETURNING refreshes the run already loaded: no second read.
        .returning(StageRun)
        .execution_options(synchronize_session=False, populate_existing=True)
    ).one_or_none()
    job = session.get(Job, job_id)
    if job is None or run is None:
        return Claim(ClaimOutcome.ENDED)
    if claimed is not None:
        if lost:
            run.error = f"attempt {run.attempts - 1}: worker lost (lease expired)"
            run.error_kind = "worker_lost"
        if job.status == JobStatus.QUEUED.value:
            job.status, job.started_at = JobStatus.RUNNING.value, now
        job.stage, job.progress_step, job.progress_total = stage, None, None
        outputs = {r.stage: r.output or {} for r in runs}
        return Claim(
            ClaimOutcome.CLAIMED,
            token,
            run.attempts,
            job=job,
            outputs=outputs,
            previous_error_kind=run.error_kind,
            took_over=lost,
        )
    return _why_not_claimed(session, job, run, now, max_attempts)


def _why_not_claimed(
    session: Session, job: Job, run: StageRun, now: datetime, max_attempts: int
) -> Claim:
    if job.status not in _ACTIVE_VALUES:
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
    primary: Job,
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
    return claims


def renew_lease(
    session: Session, job_id: str, stage: str, token: str, lease_seconds: float, **progress: Any
) -> bool:
    """Extend the lease and record progress; False if the lease was lost or the job ended."""
    now = utcnow()
    renewed = session.execute(
        update(StageRun)
        .where(StageRun.job_id == job_id, StageRun.stage == stage, StageRun.lease_token == token)
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if not renewed:
        return False
    active = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(_ACTIVE_VALUES))
        .values(updated_at=now, **progress)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    return bool(active)


def commit_stage(
    session: Session,
    job_id: str,
    stage: str,
    token: str,
    output: dict[str, Any],
    persist: Callable[[Session, Job], None] | None = None,
) -> str | None:
    """Record the stage's result if this worker still holds the lease and the job is active.

    Marks the next stage queued (or the job succeeded after the last one) in the same
    transaction. Returns the stage to enqueue next, or None (nothing next, or fenced out).
    """
    now = utcnow()
    # Lock the job row first: a concurrent cancel and this commit then happen one after the other.
    job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).one_or_none()
    runs = {r.stage: r for r in _stage_runs(session, job_id)}
    run = runs.get(stage)
    if job is None or run is None or job.status not in _ACTIVE_VALUES or run.lease_token != token:
        return None
    run.status = StageStatus.SUCCEEDED.value
    run.output, run.lease_token, run.lease_expires_at = output, None, None
    run.finished_at = now
    run.duration_s = (now - run.started_at).total_seconds() if run.started_at else None
    run.error = run.error_kind = None
    if persist is not None:
        persist(session, job)
    add_delivery(session, job, "job.stage", {"id": job_id, "stage": stage, "status": "succeeded"})
    following = next_stage(stage)
    if following is None:
        session.flush()
        finish_job(session, job_id, JobStatus.SUCCEEDED)
        return None
    after = runs.get(following)
    assert after is not None, f"job {job_id} has no {following} stage"
    # sent_at now, not after the publish: saves the publish a write. Until the message has
    # gone its outbox row exists, and the sweeper leaves alone a stage that has one.
    after.status, after.enqueued_at, after.sent_at = StageStatus.QUEUED.value, now, now
    job.stage, job.progress_step, job.progress_total = following, None, None
    add_message(session, job_id, following)
    return following


def record_failure(
    session: Session, job_id: str, stage: str, token: str, kind: str, error: str, *, final: bool
) -> None:
    """Store why an attempt failed and give the lease back (to the retry, unless ``final``)."""
    run = _stage_run(session, job_id, stage)
    if run is None or run.lease_token != token:
        return
    run.error, run.error_kind = error, kind
    run.lease_token, run.lease_expires_at = None, None
    run.status = (StageStatus.FAILED if final else StageStatus.QUEUED).value
    if final:
        finish_job(session, job_id, JobStatus.FAILED, f"{stage}: {error}")


def _stage_run(session: Session, job_id: str, stage: str) -> StageRun | None:
    return session.scalars(
        select(StageRun).where(StageRun.job_id == job_id, StageRun.stage == stage)
    ).one_or_none()


def _stage_runs(session: Session, job_id: str) -> list[StageRun]:
    runs = session.scalars(select(StageRun).where(StageRun.job_id == job_id)).all()
    return sorted(runs, key=lambda r: STAGES.index(r.stage))
