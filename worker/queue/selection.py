"""Which run a message claims: the one the scheduler's order (``producer/scheduling.py``)
puts first, which need not be the job the message named; bulk work at a batched stage that
lets compatible jobs catch up; and the companions a batch takes along.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from producer.models import Job, OutboxMessage, StageRun, utcnow
from producer.pipeline import STAGES
from producer.scheduling import Waiting, next_waiting, routable_to
from worker.queue.claims import Claimed, ClaimedJob, Refusal, Refused, claim_stage
from worker.queue.leases import ACTIVE_VALUES, QUEUED, RUNNING


@dataclass(frozen=True)
class Batching:
    """For a stage that batches: the images a bulk batch holds, and how long bulk work may wait
    for compatible jobs still at earlier stages to reach it (breadth-first during a backlog)."""

    images: int
    wait_seconds: float


# The soonest a message for a run waiting for company looks again.
WAITING_POLL_S = 0.2
# How soon a message for work that other hosts serve goes back to the queue, for them.
ELSEWHERE_S = 0.5


def claim_next(
    session: Session,
    stage: str,
    hint_job_id: str,
    *,
    lease_seconds: float,
    max_attempts: int,
    batching: Batching | None = None,
    resident: Sequence[str] = (),
    host: str | None = None,
) -> Claimed | Refused:
    """Claim the run of ``stage`` that the scheduler puts first (``resident``: the models this
    worker holds; ``host``: its name in the model registry, whose work for models only other
    hosts serve it leaves to them). ``hint_job_id`` is the job the message named: when no other
    run can be taken, the refusal is about it (done, busy, elsewhere, …)."""
    now = utcnow()
    waits_until: datetime | None = None  # the soonest a run waiting for company stops waiting
    found = next_waiting(
        session, stage, now, max_attempts=max_attempts, prefer_models=resident, host=host
    )
    for waiting in found:
        until = (
            None if batching is None else _waits_for_company(session, waiting, stage, now, batching)
        )
        if until is not None:
            waits_until = until if waits_until is None else min(waits_until, until)
            continue
        claim = claim_stage(
            session, waiting.job_id, stage, lease_seconds=lease_seconds, max_attempts=max_attempts
        )
        if isinstance(claim, Claimed):
            return claim
    if waits_until is not None:
        # The company's own messages claim the batch once it is full or the last of it arrives
        # (a batched stage is never chained into, so each arrival sends one): this message need
        # only come back when the wait is over, not poll, which would keep a concurrency-1
        # worker from the stages that bring the company (and from interactive work).
        retry_in = max((waits_until - now).total_seconds(), WAITING_POLL_S)
        return Refused(Refusal.WAITING, retry_in=retry_in)
    if host is not None and _elsewhere(session, hint_job_id, host):
        return Refused(Refusal.ELSEWHERE, retry_in=ELSEWHERE_S)
    return claim_stage(
        session, hint_job_id, stage, lease_seconds=lease_seconds, max_attempts=max_attempts
    )


def _elsewhere(session: Session, job_id: str, host: str) -> bool:
    """Whether ``job_id`` goes on and only other hosts serve its model."""
    found = session.scalar(
        select(Job.id).where(Job.id == job_id, Job.status.in_(ACTIVE_VALUES), ~routable_to(host))
    )
    return found is not None


def _waits_for_company(
    session: Session, waiting: Waiting, stage: str, now: datetime, batching: Batching
) -> datetime | None:
    """Until when bulk work should let compatible jobs at earlier stages catch up, to share a
    batch it cannot fill yet; None when it should run now. Interactive work never waits, nor
    bulk work past ``wait_seconds``."""
    if waiting.lane != "bulk" or waiting.batch_key is None or waiting.enqueued_at is None:
        return None
    until = waiting.enqueued_at + timedelta(seconds=batching.wait_seconds)
    if now > until:
        return None
    compatible = (Job.batch_key == waiting.batch_key) & Job.status.in_(ACTIVE_VALUES)
    ready = session.scalar(
        select(func.coalesce(func.sum(Job.spec["n"].as_integer()), 0))
        .join(StageRun, StageRun.job_id == Job.id)
        .where(compatible, StageRun.stage == stage, StageRun.status == QUEUED)
    )
    if int(ready or 0) >= batching.images:
        return None  # a full batch is ready
    earlier = list(STAGES[: STAGES.index(stage)])
    coming = session.scalar(
        select(StageRun.id)
        .join(Job, Job.id == StageRun.job_id)
        .where(compatible, StageRun.stage.in_(earlier), StageRun.status.in_([QUEUED, RUNNING]))
        .limit(1)
    )
    return until if coming is not None else None


def claim_companions(
    session: Session,
    primary: ClaimedJob,
    stage: str,
    *,
    images: int,
    lease_seconds: float,
    max_attempts: int,
) -> list[Claimed]:
    """Claim other jobs waiting at ``stage`` that can share a batch with ``primary``.

    At most ``images`` images in all, in the scheduler's order. A job another worker claims
    first is skipped (the conditional UPDATE in ``claim_stage`` decides). An interactive job
    takes only interactive companions: bulk ones would make it wait for their images.
    """
    candidates = next_waiting(
        session,
        stage,
        utcnow(),
        limit=max(images, 0),
        max_attempts=max_attempts,
        batch_key=primary.batch_key,
        queued_only=True,
        lane="interactive" if primary.lane == "interactive" else None,
    )
    claims: list[Claimed] = []
    for waiting in candidates:
        if waiting.job_id == primary.id or waiting.images > images:
            continue
        claim = claim_stage(
            session, waiting.job_id, stage, lease_seconds=lease_seconds, max_attempts=max_attempts
        )
        if isinstance(claim, Claimed):
            claims.append(claim)
            images -= waiting.images
    if claims:
        # A companion's message that has not gone yet (the broker was down) need not go at all:
        # its stage is under a lease now, and the sweeper sends it again if this worker is lost.
        session.connection().execute(
            delete(OutboxMessage).where(
                OutboxMessage.job_id.in_([claim.job.id for claim in claims]),
                OutboxMessage.stage == stage,
            )
        )
    return claims
