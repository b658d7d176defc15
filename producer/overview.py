"""The deployment at a glance, read from SQL: queue depth per stage and lane, jobs by status,
running jobs and their step, recent images, batches, workers, failure reasons.

One set of queries for every view an operator has: the admin API and its dashboard, the API's
``/metrics`` and ``imggen stats``. Nothing here writes.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, selectinload

from producer.batch_steering import summary
from producer.models import (
    ACTIVE,
    Batch,
    Image,
    Job,
    JobStatus,
    StageRun,
    StageStatus,
    WorkerHeartbeat,
    utcnow,
)
from producer.pipeline import STAGES
from producer.views import redact

LANES = ("interactive", "bulk")
ALIVE_S = 30.0  # a worker not heard from for this long is shown as gone
GONE_KEPT_S = 3600.0  # and dropped from the list after this long
_ACTIVE = [status.value for status in ACTIVE]


def queue_depth(session: Session) -> dict[str, dict[str, int]]:
    """Stage runs waiting to be claimed, by stage and lane (held jobs included: they wait too)."""
    rows = session.execute(
        select(StageRun.stage, Job.lane, func.count())
        .join(Job, Job.id == StageRun.job_id)
        .where(StageRun.status == StageStatus.QUEUED.value, Job.status.in_(_ACTIVE))
        .group_by(StageRun.stage, Job.lane)
    )
    depth = {stage: dict.fromkeys(LANES, 0) for stage in STAGES}
    for stage, lane, count in rows:
        depth.setdefault(stage, {})[lane] = count
    return depth


def running_by_stage(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(StageRun.stage, func.count())
        .where(StageRun.status == StageStatus.RUNNING.value)
        .group_by(StageRun.stage)
    )
    counts = dict.fromkeys(STAGES, 0)
    counts.update({stage: count for stage, count in rows})
    return counts


def job_counts(session: Session) -> dict[str, dict[str, int]]:
    """Jobs by status and lane, across every key."""
    rows = session.execute(
        select(Job.status, Job.lane, func.count()).group_by(Job.status, Job.lane)
    )
    counts = {status.value: dict.fromkeys(LANES, 0) for status in JobStatus}
    for status, lane, count in rows:
        counts.setdefault(status, {})[lane] = count
    return counts


def running_jobs(session: Session, limit: int = 20) -> list[dict[str, Any]]:
    jobs = session.scalars(
        select(Job)
        .where(Job.status == JobStatus.RUNNING.value)
        .order_by(Job.started_at.desc(), Job.id)
        .limit(limit)
    )
    return [
        {
            "id": job.id,
            "lane": job.lane,
            "model": job.model,
            "prompt": job.prompt,
            "stage": job.stage,
            "step": job.progress_step,
            "total": job.progress_total,
            "batch_id": job.batch_id,
        }
        for job in jobs
    ]


def recent_images(session: Session, limit: int = 12) -> list[dict[str, Any]]:
    images = session.scalars(
        select(Image)
        .where(Image.discarded.is_(False))
        .options(selectinload(Image.metrics), selectinload(Image.job))
        .order_by(Image.created_at.desc(), Image.id.desc())
        .limit(limit)
    )
    return [
        {
            "job_id": image.job_id,
            "index": image.index,
            "prompt": image.job.prompt,
            "model": image.job.model,
            "width": image.width,
            "height": image.height,
            "created_at": image.created_at.isoformat(),
            "metrics": {metric.name: round(metric.value, 4) for metric in image.metrics},
        }
        for image in images
    ]


def recent_batches(session: Session, limit: int = 10) -> list[dict[str, Any]]:
    """Batches with their progress and ETA: those with work left first, then those that ended,
    newest first in each."""
    working = (
        select(Job.id).where(Job.batch_id == Batch.id, Job.status.in_(_ACTIVE)).limit(1).exists()
    )
    batches = session.scalars(
        select(Batch).order_by(case((working, 0), else_=1), Batch.created_at.desc()).limit(limit)
    )
    return [summary(session, batch) for batch in batches]


def workers(session: Session, now: datetime | None = None) -> list[dict[str, Any]]:
    """Worker processes heard from in the last hour, the live ones first."""
    now = now or utcnow()
    rows = session.scalars(
        select(WorkerHeartbeat)
        .where(WorkerHeartbeat.last_seen_at >= now - timedelta(seconds=GONE_KEPT_S))
        .order_by(WorkerHeartbeat.last_seen_at.desc())
    )
    found = [
        {
            "id": row.id,
            "hostname": row.hostname,
            "pid": row.pid,
            "alive": row.last_seen_at >= now - timedelta(seconds=ALIVE_S),
            "queues": row.queues,
            "models": row.models,
            "current_job_id": row.current_job_id,
            "current_stage": row.current_stage,
            "started_at": row.started_at.isoformat(),
            "last_seen_at": row.last_seen_at.isoformat(),
        }
        for row in rows
    ]
    return sorted(found, key=lambda worker: not worker["alive"])


def failure_reasons(session: Session, since: datetime, limit: int = 10) -> list[dict[str, Any]]:
    """The commonest reasons jobs failed since ``since`` (first line, server folders hidden)."""
    errors = session.scalars(
        select(Job.error).where(
            Job.status == JobStatus.FAILED.value,
            Job.finished_at >= since,
            Job.error.is_not(None),
        )
    )
    reasons = Counter(redact(error.splitlines()[0] if error else "") for error in errors)
    return [{"reason": reason, "jobs": jobs} for reason, jobs in reasons.most_common(limit)]


def snapshot(session: Session, now: datetime | None = None) -> dict[str, Any]:
    """Everything the dashboard shows, read in one transaction."""
    now = now or utcnow()
    return {
        "at": now.isoformat(),
        "queue_depth": queue_depth(session),
        "running_by_stage": running_by_stage(session),
        "jobs": job_counts(session),
        "running": running_jobs(session),
        "recent_images": recent_images(session),
        "batches": recent_batches(session),
        "workers": workers(session, now),
        "failures": failure_reasons(session, now - timedelta(hours=24)),
    }
