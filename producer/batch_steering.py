"""Watching and steering a batch: its counts, pace and ETA; pause, resume, cancel, retry.

A paused batch's jobs are held: a stage running finishes, nothing more of them is claimed. On
resume, each waiting stage gets a message of its own (those of the pause were dropped).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from producer.jobs import cancel_job
from producer.models import (
    ACTIVE,
    Batch,
    Image,
    Job,
    JobStatus,
    StageRun,
    StageStatus,
    utcnow,
)
from producer.outbox import add_message

_ACTIVE = [status.value for status in ACTIVE]


def summary(session: Session, batch: Batch, now: Any = None) -> dict[str, Any]:
    """A batch's counts by status, its pace (images a second over the last minute) and ETA."""
    now = now or utcnow()
    counts = dict(
        session.execute(
            select(Job.status, func.count()).where(Job.batch_id == batch.id).group_by(Job.status)
        ).all()
    )
    recent = (
        session.scalar(
            select(func.count())
            .select_from(Image)
            .join(Job, Job.id == Image.job_id)
            .where(Job.batch_id == batch.id, Image.created_at >= now - timedelta(seconds=60))
        )
        or 0
    )
    jobs = sum(counts.values())
    done = sum(
        counts.get(s.value, 0) for s in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)
    )
    remaining_images = (
        session.scalar(
            select(func.coalesce(func.sum(Job.spec["n"].as_integer()), 0)).where(
                Job.batch_id == batch.id, Job.status.in_(_ACTIVE)
            )
        )
        or 0
    )
    rate = recent / 60.0
    return {
        "id": batch.id,
        "name": batch.name,
        "status": batch.status,
        "created_at": batch.created_at.isoformat(),
        "jobs": jobs,
        "counts": {status.value: counts.get(status.value, 0) for status in JobStatus},
        "done": done,
        "images_per_s": round(rate, 3),
        "eta_seconds": round(remaining_images / rate, 1) if rate > 0 and remaining_images else None,
    }


def find(session: Session, batch_id: str, owner_key_id: int | None = None) -> Batch | None:
    batch = session.get(Batch, batch_id)
    return batch if batch is not None and batch.owner_key_id == owner_key_id else None


def pause(session: Session, batch: Batch) -> None:
    """Nothing more of the batch is claimed; stages running now finish."""
    batch.status = "paused"
    session.execute(
        update(Job)
        .where(Job.batch_id == batch.id, Job.status.in_(_ACTIVE))
        .values(held=True)
        .execution_options(synchronize_session=False)
    )


def resume(session: Session, batch: Batch) -> int:
    """Release the batch's jobs, and give each waiting stage a message (the messages of the
    pause found the jobs held and were dropped). Returns how many were sent for."""
    batch.status = "active"
    session.execute(
        update(Job)
        .where(Job.batch_id == batch.id)
        .values(held=False)
        .execution_options(synchronize_session=False)
    )
    waiting = session.execute(
        select(StageRun.job_id, StageRun.stage)
        .join(Job, Job.id == StageRun.job_id)
        .where(
            Job.batch_id == batch.id,
            Job.status.in_(_ACTIVE),
            StageRun.status == StageStatus.QUEUED.value,
        )
    ).all()
    for job_id, stage in waiting:
        add_message(session, job_id, stage)
    return len(waiting)


def cancel(session: Session, batch: Batch) -> int:
    """Cancel every job of the batch not ended yet; returns how many."""
    active = session.scalars(
        select(Job.id).where(Job.batch_id == batch.id, Job.status.in_(_ACTIVE))
    ).all()
    return sum(cancel_job(session, job_id) for job_id in active)


def retry_failed(session: Session, batch: Batch) -> int:
    """Queue the batch's failed jobs again from the stage that failed (earlier stages' outputs
    stay); returns how many."""
    failed = session.scalars(
        select(Job).where(Job.batch_id == batch.id, Job.status == JobStatus.FAILED.value)
    ).all()
    now = utcnow()
    for job in failed:
        run = next(
            (r for r in job.stage_runs if r.status == StageStatus.FAILED.value),
            None,
        )
        if run is None:
            continue
        job.status, job.error, job.finished_at, job.stage = (
            JobStatus.QUEUED.value,
            None,
            None,
            run.stage,
        )
        job.held = batch.status == "paused"
        run.status, run.attempts, run.error, run.error_kind = (
            StageStatus.QUEUED.value,
            0,
            None,
            None,
        )
        run.enqueued_at, run.sent_at = now, now
        add_message(session, job.id, run.stage)
    return len(failed)
