"""Leases: who may run a stage, and whose result counts.

A worker *claims* a stage (``claims.py``) with a conditional UPDATE that sets a fresh lease
token. Every later write (progress, errors, the result in ``commits.py``) is conditional on that
token, so if the lease expired and another worker re-claimed the stage, the first one can no
longer commit: a stage redelivered while still running is done once. The attempt counter lives
in SQL too, so a job that kills its worker every time ends failed instead of looping.

Claims, renewals and commits run for every stage of every job: Core statements built once, run
on the session's connection with parameters. No ORM loads, identity map or flush, and no
statement construction per call (together most of the queue's cost per job on a CPU).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from producer.models import ACTIVE, Job, StageRun, StageStatus, utcnow

ACTIVE_VALUES = [status.value for status in ACTIVE]
RUNNING, QUEUED = StageStatus.RUNNING.value, StageStatus.QUEUED.value
job_is_active = Job.status.in_(ACTIVE_VALUES)
this_run = (StageRun.job_id == bindparam("job")) & (StageRun.stage == bindparam("stage_name"))

_RENEW_RUN = (
    update(StageRun)
    .where(this_run, StageRun.lease_token == bindparam("token"))
    .values(lease_expires_at=bindparam("expires"))
)
_TOUCH_JOB = (
    update(Job).where(Job.id == bindparam("job"), job_is_active).values(updated_at=bindparam("now"))
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


_START_RUN = _RENEW_RUN.values(started_at=bindparam("now"))


def restart_lease(
    session: Session, job_id: str, stage: str, token: str, lease_seconds: float
) -> bool:
    """A claimed stage that waited its turn in this process starts now: its lease runs from
    now, and so does its time (the wait was not the stage's). False if the lease was lost."""
    now = utcnow()
    values = {"job": job_id, "stage_name": stage, "token": token, "now": now}
    values["expires"] = now + timedelta(seconds=lease_seconds)
    return bool(session.connection().execute(_START_RUN, values).rowcount)


def stage_run(session: Session, job_id: str, stage: str) -> StageRun | None:
    return session.scalars(
        select(StageRun).where(StageRun.job_id == job_id, StageRun.stage == stage)
    ).one_or_none()
