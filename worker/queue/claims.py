"""Claiming a stage: a lease token and one more attempt (``Claimed``), or the reason not to run
it (``Refused``).

Which run a message claims, and which companions a batch takes, is ``selection.py``'s.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, Text, bindparam, func, select, update
from sqlalchemy.orm import Session

from producer.jobs import finish_job
from producer.models import Job, JobStatus, StageRun, StageStatus, utcnow
from worker.queue.leases import (
    ACTIVE_VALUES,
    QUEUED,
    RUNNING,
    job_is_active,
    stage_run,
    this_run,
)
from worker.queue.retry import FailureKind, gave_up


class Refusal(enum.Enum):
    DONE = "done"  # the stage already succeeded: a duplicate message
    ENDED = "ended"  # the job is already terminal (canceled, failed)
    BUSY = "busy"  # another worker holds a live lease: try again after it expires
    EXHAUSTED = "exhausted"  # no attempts left: the job has been failed
    NOT_READY = "not_ready"  # an earlier stage has not finished: a stray message
    WAITING = "waiting"  # bulk work waiting for compatible jobs still at earlier stages
    HELD = "held"  # its batch is paused: resumed, its waiting stage gets a message of its own
    ELSEWHERE = "elsewhere"  # its model is served by other hosts, not this one: theirs


@dataclass(frozen=True)
class Refused:
    reason: Refusal
    retry_in: float = 0.0  # BUSY, WAITING, ELSEWHERE: when to look again


@dataclass(frozen=True)
class ClaimedJob:
    """What a stage needs of its job, read by the claim's own statement (no ORM load)."""

    id: str
    model: str
    spec: dict[str, Any]
    input_image_uri: str | None
    batch_key: str | None
    lane: str
    batch_id: str | None  # the bulk run it belongs to


@dataclass(frozen=True)
class Claimed:
    job: ClaimedJob
    stage: str
    token: str  # every write of this run is conditional on it
    attempt: int
    outputs: dict[str, dict[str, Any] | None]  # the job's stage runs' stored outputs, by stage
    previous_error_kind: str | None = None  # how the last attempt failed ("oom", …)
    took_over: bool = False  # from a worker whose lease ran out (it may have left partial files)

    @property
    def after_oom(self) -> bool:
        return self.previous_error_kind == FailureKind.OOM.value


_READ_RUNS = select(StageRun.stage, StageRun.status, StageRun.attempts, StageRun.output).where(
    StageRun.job_id == bindparam("job")
)
# Queued, or running on a lease that ran out; attempts left; the job still active.
_CLAIM_RUN = (
    update(StageRun)
    .where(
        this_run,
        StageRun.attempts < bindparam("max_attempts"),
        (StageRun.status == QUEUED)
        | ((StageRun.status == RUNNING) & (StageRun.lease_expires_at < bindparam("now"))),
        StageRun.job_id.in_(select(Job.id).where(job_is_active, Job.held.is_(False))),
    )
    .values(
        status=RUNNING,
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
    .where(Job.id == bindparam("job"), job_is_active)
    .values(
        status=JobStatus.RUNNING.value,
        started_at=func.coalesce(Job.started_at, bindparam("now")),
        stage=bindparam("claimed_stage"),
        progress_step=None,
        progress_total=None,
        updated_at=bindparam("now"),
    )
    .returning(
        Job.id, Job.model, Job.spec, Job.input_image_uri, Job.batch_key, Job.lane, Job.batch_id
    )
)


def claim_stage(
    session: Session, job_id: str, stage: str, *, lease_seconds: float, max_attempts: int
) -> Claimed | Refused:
    """Try to take the lease on ``stage`` of ``job_id``."""
    now = utcnow()
    token = uuid.uuid4().hex
    connection = session.connection()
    # One read of the job's stage runs serves the take-over check and the earlier outputs.
    runs = {row.stage: row for row in connection.execute(_READ_RUNS, {"job": job_id})}
    run = runs.get(stage)
    if run is None:
        return Refused(Refusal.ENDED)  # no such job (deleted) or stage
    # A running stage whose lease ran out lost its worker (killed, or cut off from the database).
    lost = run.status == RUNNING
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
            "lost_kind": FailureKind.WORKER_LOST.value if lost else None,
        },
    ).one_or_none()
    if claimed is None:
        refused = _why_refused(session, job_id, stage, now, max_attempts)
        if refused.reason is Refusal.EXHAUSTED:
            _give_up(session, job_id, stage)
        return refused
    job = connection.execute(
        _START_JOB_STAGE, {"job": job_id, "claimed_stage": stage, "now": now}
    ).one_or_none()
    if job is None:
        return Refused(Refusal.ENDED)
    return Claimed(
        ClaimedJob(*job),
        stage,
        token,
        claimed.attempts,
        outputs={name: row.output for name, row in runs.items()},
        previous_error_kind=claimed.error_kind,
        took_over=lost,
    )


def _why_refused(
    session: Session, job_id: str, stage: str, now: datetime, max_attempts: int
) -> Refused:
    job, run = session.get(Job, job_id), stage_run(session, job_id, stage)
    if job is None or run is None or job.status not in ACTIVE_VALUES:
        return Refused(Refusal.ENDED)
    if job.held:
        return Refused(Refusal.HELD)
    if run.status == StageStatus.SUCCEEDED.value:
        return Refused(Refusal.DONE)
    if run.status == StageStatus.PENDING.value:
        return Refused(Refusal.NOT_READY)
    if run.attempts >= max_attempts:
        return Refused(Refusal.EXHAUSTED)
    expires = run.lease_expires_at or now
    return Refused(Refusal.BUSY, retry_in=max((expires - now).total_seconds(), 0.0) + 1.0)


def _give_up(session: Session, job_id: str, stage: str) -> None:
    """Fail a job whose stage has no attempts left (each of its workers was lost)."""
    run = stage_run(session, job_id, stage)
    assert run is not None, "the refusal just read it"
    run.status = StageStatus.FAILED.value
    finish_job(session, job_id, JobStatus.FAILED, gave_up(stage, run.attempts, run.error))
