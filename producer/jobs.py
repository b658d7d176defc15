"""Queries and state changes on jobs. Callers open the session; these functions never commit.

Every move to a terminal state is a conditional UPDATE, so a job ends in exactly one of them
whatever races (cancel against a finishing stage, two workers on one stage).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, object_session, selectinload

from producer.errors import JobNotFound
from producer.metrics import JOBS_FINISHED, JOBS_SUBMITTED, after_commit
from producer.models import (
    ACTIVE,
    Image,
    Job,
    JobStatus,
    StageRun,
    StageStatus,
    utcnow,
)
from producer.outbox import add_message
from producer.pipeline import STAGES
from producer.scheduling import place_in_queue
from producer.spec import JobSpec
from producer.stage_outputs import cache_record, expansion_record, read_output
from producer.views import public_view
from producer.webhooks import add_delivery


def new_job_id() -> str:
    return uuid.uuid4().hex


def is_job_id(text: str) -> bool:
    """Whether ``text`` has the shape of the ids new_job_id makes."""
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def batch_key(spec: JobSpec, model: str) -> str:
    """Jobs with the same key can share a denoising batch (same model, shape and schedule)."""
    shape = [model, spec.width, spec.height, spec.steps, spec.guidance, spec.has_input_image]
    if spec.scheduler is not None:
        shape.append(spec.scheduler)
    if spec.has_input_image:
        shape.append(spec.strength)
    if spec.loras:
        shape.append([[lora.name, lora.weight] for lora in spec.loras])
    return hashlib.sha256(json.dumps(shape).encode()).hexdigest()


def create_job(
    session: Session,
    spec: JobSpec,
    model: str,
    *,
    job_id: str | None = None,
    input_image_uri: str | None = None,
    owner_key_id: int | None = None,
    idempotency_key: str | None = None,
) -> Job:
    """Insert a queued job and one row per stage; the first stage is marked queued."""
    now = utcnow()
    job = Job(
        id=job_id or new_job_id(),
        input_image_uri=input_image_uri,
        batch_key=batch_key(spec, model),
        owner_key_id=owner_key_id,
        idempotency_key=idempotency_key,
        lane=spec.lane,
        priority=spec.priority,
        status=JobStatus.QUEUED.value,
        spec=spec.model_dump(mode="json"),
        model=model,
        prompt=spec.prompt,
        seed=spec.seed,
        created_at=now,
        updated_at=now,
    )
    job.stage_runs = [
        StageRun(
            stage=stage,
            status=(StageStatus.QUEUED if i == 0 else StageStatus.PENDING).value,
            attempts=0,
            enqueued_at=now if i == 0 else None,
            # As a stage commit does: sent now, published right after (publish_now) or, while
            # the outbox row exists, by the relay, which sets it again.
            sent_at=now if i == 0 else None,
        )
        for i, stage in enumerate(STAGES)
    ]
    session.add(job)
    session.flush()
    add_message(session, job.id, STAGES[0])
    after_commit(session, JOBS_SUBMITTED.labels(spec.lane).inc)
    return job


def get_job(session: Session, job_id: str, *, full: bool = False) -> Job:
    """The job with ``job_id``; raises JobNotFound. ``full`` also loads stages, images, metrics."""
    if not is_job_id(job_id):  # not worth a query, and some text the database cannot even take
        raise JobNotFound(f"no job with id {job_id!r}")
    query = select(Job).where(Job.id == job_id)
    if full:
        query = query.options(
            selectinload(Job.stage_runs),
            selectinload(Job.images).selectinload(Image.metrics),
        )
    job = session.scalars(query).one_or_none()
    if job is None:
        raise JobNotFound(f"no job with id {job_id!r}")
    return job


def finish_job(session: Session, job_id: str, status: JobStatus, error: str | None = None) -> bool:
    """Move an active job to a terminal ``status``; False if it already was terminal.

    Its webhook, if it asked for one, is queued in the same transaction.
    """
    now = utcnow()
    ended = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_([s.value for s in ACTIVE]))
        .values(status=status.value, error=error, finished_at=now, updated_at=now)
        .returning(Job.spec, Job.lane)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if ended is None:
        return False
    spec, lane = ended
    after_commit(session, JOBS_FINISHED.labels(status.value, lane).inc)

    def view() -> dict[str, Any]:
        session.expire_all()  # the UPDATE bypassed the session: read the job afresh
        return public_view(job_view(get_job(session, job_id, full=True)))

    add_delivery(session, job_id, spec, "job.finished", view)
    return True


def cancel_job(session: Session, job_id: str) -> bool:
    """Cancel a queued or running job at once; a running stage stops at its next step.

    Returns False when the job had already ended. Raises JobNotFound.
    """
    get_job(session, job_id)
    if not finish_job(session, job_id, JobStatus.CANCELED, error="canceled by request"):
        return False
    # Every stage not yet done ends too; a worker running one loses its lease with it, so its
    # next step stops, and nothing retries it.
    unfinished = [StageStatus.PENDING.value, StageStatus.QUEUED.value, StageStatus.RUNNING.value]
    session.execute(
        update(StageRun)
        .where(StageRun.job_id == job_id, StageRun.status.in_(unfinished))
        .values(status=StageStatus.CANCELED.value, lease_token=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return True


def job_view(job: Job, *, place: bool = False) -> dict[str, Any]:
    """The job as plain JSON-able data: what the CLI prints and the client returns.

    ``place``: also where it waits in its stage's queue (position, ETA), if it waits.
    """
    return {
        "id": job.id,
        "status": job.status,
        "stage": job.stage,
        "progress": {"step": job.progress_step, "total": job.progress_total},
        "queue": _place(job) if place else None,
        "model": job.model,
        "prompt": job.prompt,
        "expanded_prompt": job.expanded_prompt,
        "caption": job.caption,
        "input_image": job.input_image_uri,
        "spec": job.spec,
        "error": job.error,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        # Cache hits, steps skipped and batch size of the denoise stage, once it ran.
        "cache": next(
            (
                record.model_dump()
                for run in job.stage_runs
                if run.stage == "denoise" and (record := cache_record(run.output)) is not None
            ),
            None,
        ),
        # How the expand stage arrived at the prompt drawn, once it ran.
        "expansion": next(
            (
                expansion_record(run.output)
                for run in job.stage_runs
                if run.stage == "expand" and run.output
            ),
            None,
        ),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "stages": [
            {
                "stage": run.stage,
                "status": run.status,
                "attempts": run.attempts,
                "duration_s": run.duration_s,
                "error": run.error,
                "error_kind": run.error_kind,
                "notes": read_output(run.stage, run.output).notes if run.output else [],
            }
            for run in job.stage_runs
        ],
        "images": [
            {
                "index": image.index,
                "uri": image.uri,
                "seed": image.seed,
                "width": image.width,
                "height": image.height,
                "discarded": image.discarded,
                "metrics": {m.name: m.value for m in image.metrics},
            }
            for image in job.images
        ],
    }


def _place(job: Job) -> dict[str, Any] | None:
    session = object_session(job)
    waiting = any(
        run.stage == job.stage and run.status == StageStatus.QUEUED.value for run in job.stage_runs
    )
    if session is None or job.stage is None or not waiting:
        return None
    found = place_in_queue(session, job.id, job.stage, utcnow())
    return found.as_json() if found else None


def list_jobs(
    session: Session,
    *,
    owner_key_id: int | None,
    status: str | None = None,
    limit: int = 50,
    cursor: tuple[datetime, str] | None = None,
    lane: str | None = None,
    every_owner: bool = False,
) -> tuple[list[Job], tuple[datetime, str] | None]:
    """A page of the owner's jobs (``every_owner``: everyone's), newest first, and the cursor
    of the next page (or None)."""
    query = (
        select(Job)
        .options(selectinload(Job.stage_runs), selectinload(Job.images).selectinload(Image.metrics))
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(limit + 1)
    )
    if not every_owner:
        query = query.where(Job.owner_key_id == owner_key_id)
    if status is not None:
        query = query.where(Job.status == status)
    if lane is not None:
        query = query.where(Job.lane == lane)
    if cursor is not None:
        created, last_id = cursor
        query = query.where(
            (Job.created_at < created) | ((Job.created_at == created) & (Job.id < last_id))
        )
    jobs = list(session.scalars(query).all())
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return jobs, ((jobs[-1].created_at, jobs[-1].id) if more and jobs else None)


def current_job(session: Session, *, owner_key_id: int) -> tuple[Job | None, int]:
    """The owner's job that is furthest along (its newest running job, else its newest queued
    one) and how many of its jobs are queued or running."""
    active = [s.value for s in ACTIVE]
    mine = select(Job).where(Job.owner_key_id == owner_key_id, Job.status.in_(active))
    count = session.scalar(select(func.count()).select_from(mine.subquery())) or 0
    job = session.scalars(
        mine.order_by(
            (Job.status == JobStatus.RUNNING.value).desc(), Job.created_at.desc(), Job.id.desc()
        ).limit(1)
    ).first()
    return job, int(count)
