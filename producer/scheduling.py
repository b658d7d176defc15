"""The order in which waiting work is taken, at every stage.

1. **Lane**: ``interactive`` (single submissions, by default) before ``bulk``.
2. **Priority** within the lane, higher first.
3. **The model resident** in the claiming worker (``prefer_models``), so that a mixed backlog
   does not make it load models in turn; work for another model that has waited
   ``AFFINITY_S`` competes as if resident.
4. **Fair share** among owners (API keys; the CLI and client's own jobs are one owner): the owner
   whose jobs this stage took fewest of in the last ``FAIR_WINDOW_S`` goes first, so one key's
   10,000 bulk jobs do not starve another key's 10. A newcomer is served first until it has had
   as many turns in the window as the others.
5. **Age**: the run queued longest.

A worker host takes no work for a model that other hosts serve and it does not (the model
registry): that work waits for them. Work for a model no host serves is anyone's.

SQL decides what is claimed; a broker message only wakes a worker for a stage (the job it names
is a hint). The producer holds this order because the job's view shows its place in it; the
workers claim by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, case, exists, func, literal, select
from sqlalchemy.orm import Session

from producer.models import ACTIVE, Job, RegistryEntry, StageRun, StageStatus
from producer.pipeline import STAGES

FAIR_WINDOW_S = 60.0
AFFINITY_S = 30.0
_ACTIVE = [status.value for status in ACTIVE]
_INTERACTIVE_FIRST = case((Job.lane == "interactive", 0), else_=1)
_OWNER = func.coalesce(Job.owner_key_id, 0)  # 0: jobs submitted without a key


@dataclass(frozen=True)
class Waiting:
    """A stage run that may be claimed, as the scheduler sees it."""

    job_id: str
    lane: str
    batch_key: str | None
    images: int
    enqueued_at: datetime | None


def waiting_runs(
    stage: str,
    now: datetime,
    *,
    max_attempts: int | None = None,
    batch_key: str | None = None,
    queued_only: bool = False,
    lane: str | None = None,
    prefer_models: Sequence[str] = (),
    host: str | None = None,
) -> Select[Any]:
    """The runs of ``stage`` that may be claimed now, best first: queued, or (unless
    ``queued_only``) running on a lease that ran out (a lost worker's), of active jobs with
    attempts left."""
    served = (
        select(_OWNER.label("owner"), func.count().label("turns"))
        .select_from(StageRun)
        .join(Job, Job.id == StageRun.job_id)
        .where(
            StageRun.stage == stage,
            StageRun.started_at >= now - timedelta(seconds=FAIR_WINDOW_S),
        )
        .group_by(_OWNER)
        .subquery()
    )
    claimable = StageRun.status == StageStatus.QUEUED.value
    if not queued_only:
        lost = (StageRun.status == StageStatus.RUNNING.value) & (StageRun.lease_expires_at < now)
        claimable = claimable | lost
    query = (
        select(
            StageRun.job_id,
            Job.lane,
            Job.batch_key,
            Job.spec["n"].as_integer(),
            StageRun.enqueued_at,
        )
        .join(Job, Job.id == StageRun.job_id)
        .outerjoin(served, served.c.owner == _OWNER)
        .where(StageRun.stage == stage, claimable, Job.status.in_(_ACTIVE), Job.held.is_(False))
        .order_by(
            _INTERACTIVE_FIRST,
            Job.priority.desc(),
            _affinity(prefer_models, now),
            func.coalesce(served.c.turns, 0),
            StageRun.enqueued_at,
            StageRun.job_id,
        )
    )
    if max_attempts is not None:
        query = query.where(StageRun.attempts < max_attempts)
    if batch_key is not None:
        query = query.where(Job.batch_key == batch_key)
    if lane is not None:
        query = query.where(Job.lane == lane)
    if host is not None:
        query = query.where(routable_to(host))
    return query


def routable_to(host: str) -> Any:
    """Work ``host`` may take: for a model it serves, or one no host serves."""
    served = (RegistryEntry.model == Job.model) & RegistryEntry.refused.is_(None)
    return exists().where(served, RegistryEntry.hostname == host) | ~exists().where(served)


def _affinity(models: Sequence[str], now: datetime) -> Any:
    """0 for work on one of ``models`` (or waiting long enough to be taken anyway), else 1."""
    if not models:
        return literal(0)
    waited_long = StageRun.enqueued_at < now - timedelta(seconds=AFFINITY_S)
    return case((Job.model.in_(list(models)) | waited_long, 0), else_=1)


def next_waiting(
    session: Session,
    stage: str,
    now: datetime,
    *,
    limit: int = 8,
    max_attempts: int | None = None,
    batch_key: str | None = None,
    queued_only: bool = False,
    lane: str | None = None,
    prefer_models: Sequence[str] = (),
    host: str | None = None,
) -> list[Waiting]:
    """Up to ``limit`` runs of ``stage`` in the order they are to be taken."""
    query = waiting_runs(
        stage,
        now,
        max_attempts=max_attempts,
        batch_key=batch_key,
        queued_only=queued_only,
        lane=lane,
        prefer_models=prefer_models,
        host=host,
    )
    return [Waiting(*row) for row in session.execute(query.limit(limit))]


def interactive_waiting(session: Session, stages: Sequence[str], host: str | None = None) -> bool:
    """Whether interactive work waits at one of ``stages`` (bulk work gives way to it) that
    ``host`` may take."""
    query = (
        select(StageRun.id)
        .join(Job, Job.id == StageRun.job_id)
        .where(
            StageRun.stage.in_(stages),
            StageRun.status == StageStatus.QUEUED.value,
            Job.lane == "interactive",
            Job.status.in_(_ACTIVE),
            Job.held.is_(False),
        )
    )
    if host is not None:
        query = query.where(routable_to(host))
    return session.scalar(query.limit(1)) is not None


def queue_position(session: Session, job_id: str, stage: str, now: datetime) -> int | None:
    """How many runs of ``stage`` are to be taken before ``job_id``'s (None: it is not waiting
    there). Counted up to 10,000."""
    ids = session.scalars(waiting_runs(stage, now).with_only_columns(StageRun.job_id).limit(10_000))
    for position, waiting in enumerate(ids):
        if waiting == job_id:
            return position
    return None


@dataclass(frozen=True)
class Place:
    """Where a waiting job stands: runs to be taken before it, and when it should be done."""

    position: int
    eta_seconds: float | None  # None until the stages have been measured

    def as_json(self) -> dict[str, float | int | None]:
        eta = None if self.eta_seconds is None else round(self.eta_seconds, 1)
        return {"position": self.position, "eta_seconds": eta}


RATE_WINDOW_S = 600.0  # stage rates are measured over the runs that finished this recently


def place_in_queue(session: Session, job_id: str, stage: str, now: datetime) -> Place | None:
    """``job_id``'s place at ``stage``, where it waits (None where it does not). The ETA: the
    runs ahead at the stage's measured rate, then each later stage's mean duration."""
    position = queue_position(session, job_id, stage, now)
    if position is None:
        return None
    measured = {
        row.stage: row
        for row in session.execute(
            select(
                StageRun.stage,
                func.count().label("runs"),
                func.min(StageRun.finished_at).label("since"),
                func.avg(StageRun.duration_s).label("mean_s"),
            )
            .where(
                StageRun.status == StageStatus.SUCCEEDED.value,
                StageRun.finished_at >= now - timedelta(seconds=RATE_WINDOW_S),
            )
            .group_by(StageRun.stage)
        )
    }
    current = measured.get(stage)
    if current is None or current.runs < 2 or current.since is None:
        return Place(position, None)
    span = max((now - current.since).total_seconds(), 1e-3)
    eta = (position + 1) / (current.runs / span)
    for later in STAGES[STAGES.index(stage) + 1 :]:
        row = measured.get(later)
        if row is None or row.mean_s is None:
            return Place(position, None)
        eta += float(row.mean_s)
    return Place(position, eta)
