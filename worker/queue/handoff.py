"""What runs next and how it gets there: here, at once (chained), or as a message.

``commit_stage`` says which stage comes next; this module decides, in the commit's own
transaction, how it runs. Chained: this process claims it in that transaction and runs it
right away, with no broker round trip and its inputs in memory; if this process dies before
that stage commits, its lease runs out and the sweeper sends it again, as for any stage lost
mid-run. Otherwise: an outbox row in the transaction, published right after the commit (the
relay sends it if that publish fails). A retry of a chained stage is a message too, due once
its backoff is over.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from celery import Celery, Task
from sqlalchemy.orm import Session

from producer.db import in_transaction
from producer.models import utcnow
from producer.outbox import add_message, publish_now
from producer.pipeline import queue_name
from worker.queue.claims import Claimed, claim_stage
from worker.queue.leases import renew_lease, restart_lease
from worker.settings import WorkerSettings
from worker.stages import STAGES

log = logging.getLogger(__name__)

# A chained stage runs inside the Celery task of the stage before it, so under that task's time
# limit: chain only while the task has used a tenth of it, leaving the next stage the rest.
CHAIN_BUDGET = 0.1


@dataclass(frozen=True)
class Next:
    stage: str
    claimed: Claimed | None  # claimed to run here; None: its message is in the outbox


def may_chain(task: Task, settings: WorkerSettings, stage: str | None, started: float) -> bool:
    """Whether this process may run ``stage`` right after the stage before, instead of
    sending it (``started``: when the Celery task began, on the monotonic clock)."""
    if stage is None or not settings.chain_stages:
        return False
    if STAGES[stage].batched and settings.batch_max_images > 1:
        return False  # compatible jobs gather in its queue, to share a batch
    if queue_name(stage) not in task.app.amqp.queues.consume_from:
        return False  # the deployment gives that stage workers of its own (-Q)
    return time.monotonic() - started < CHAIN_BUDGET * settings.stage_time_limit_seconds


def hand_on(
    session: Session, settings: WorkerSettings, job_id: str, stage: str, *, chain: bool
) -> Next:
    """In the transaction that committed the stage before ``stage``: claim ``stage`` to run
    here when ``chain``, else (or when it cannot be claimed) write its message."""
    if chain:
        claim = claim_stage(
            session,
            job_id,
            stage,
            lease_seconds=settings.stage_lease_seconds,
            max_attempts=settings.stage_max_attempts,
        )
        if isinstance(claim, Claimed):
            return Next(stage, claim)
    add_message(session, job_id, stage)
    return Next(stage, None)


def take_turn(
    settings: WorkerSettings, claims: list[Claimed], *, restart: bool, renew: bool
) -> list[Claimed]:
    """Before the first of ``claims`` runs here: with ``restart``, its lease and its time start
    now (it waited its turn); with ``renew``, the leases of those still waiting are renewed (a
    lease is renewed as its stage runs, not before). Those whose lease was lost are someone
    else's now: left out."""

    def turn(session: Session) -> list[Claimed]:
        held: list[Claimed] = []
        for claim in claims:
            keep = restart_lease if restart and not held else renew_lease if renew else None
            lease = (claim.job.id, claim.stage, claim.token, settings.stage_lease_seconds)
            if keep is None or keep(session, *lease):
                held.append(claim)
        return held

    return in_transaction(settings.resolved_database_url, turn)


def send(database_url: str, app: Celery, job_id: str, stage: str) -> None:
    """After the commit: publish the message ``hand_on`` wrote (left to the relay on failure)."""
    try:
        publish_now(database_url, app, job_id, stage)
    except Exception:  # noqa: BLE001 - the relay will send it
        log.warning("job %s: %s message left to the relay", job_id, stage, exc_info=True)


def again(session: Session, job_id: str, stage: str) -> None:
    """A stage that gave way (it went back to its queue): a message of its own, sent after the
    commit (``send``)."""
    add_message(session, job_id, stage)


def retry_later(session: Session, job_id: str, stage: str, seconds: float) -> None:
    """The retry of a stage that has no Celery task of its own to retry (it was chained): a
    message of its own, sent by the relay once ``seconds`` are over."""
    add_message(session, job_id, stage, due=utcnow() + timedelta(seconds=seconds))
