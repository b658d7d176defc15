"""Ending a stage run under its lease: its result (``commit_stage``), its failure
(``record_failure``), or giving way (``snooze_stage``). ``handoff.py`` gets what comes next
there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from producer.jobs import finish_job
from producer.models import Job, JobStatus, StageRun, StageStatus, utcnow
from producer.pipeline import next_stage
from producer.webhooks import add_delivery
from worker.queue.leases import ACTIVE_VALUES, QUEUED, stage_run, this_run

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
    .where(this_run)
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
    .where(this_run)
    .values(status=QUEUED, enqueued_at=bindparam("now"), sent_at=bindparam("now"))
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
) -> str | None:
    """Record the stage's result if this worker still holds the lease and the job is active.

    In the same transaction, marks the next stage queued, or the job succeeded after the last
    one. Returns the stage that runs next; None when there is none, or when this worker was
    fenced out (nothing was written). ``persist(session, job_id)`` adds the stage's own rows
    (images, metrics) to the transaction. How the next stage gets to run is ``handoff.py``'s.
    """
    now = utcnow()
    connection = session.connection()
    current = connection.execute(
        _LOCK_FOR_COMMIT, {"job": job_id, "stage_name": stage}
    ).one_or_none()
    if current is None or current.status not in ACTIVE_VALUES or current.lease_token != token:
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
    return following


_SNOOZE_RUN = (
    update(StageRun)
    .where(this_run, StageRun.lease_token == bindparam("token"))
    .values(
        status=QUEUED,
        lease_token=None,
        lease_expires_at=None,
        attempts=StageRun.attempts - 1,
        sent_at=bindparam("now"),
    )
)


def snooze_stage(session: Session, job_id: str, stage: str, token: str) -> bool:
    """Give the stage back to its queue under this worker's lease, the attempt not spent (it
    gave way; nothing failed). It keeps its place by age. False: the lease was lost."""
    values = {"job": job_id, "stage_name": stage, "token": token, "now": utcnow()}
    return bool(session.connection().execute(_SNOOZE_RUN, values).rowcount)


def record_failure(
    session: Session,
    job_id: str,
    stage: str,
    token: str,
    kind: str,
    error: str,
    *,
    final: bool,
) -> bool:
    """Store why an attempt failed and give the lease back (to the retry, unless ``final``).

    Returns whether it was recorded (False: this worker no longer held the lease).
    """
    run = stage_run(session, job_id, stage)
    if run is None or run.lease_token != token:
        return False
    run.error, run.error_kind = error, kind
    run.lease_token, run.lease_expires_at = None, None
    run.status = (StageStatus.FAILED if final else StageStatus.QUEUED).value
    if final:
        finish_job(session, job_id, JobStatus.FAILED, f"{stage}: {error}")
    return True
