"""Bulk work giving way to interactive work, between denoising steps.

A batch of bulk jobs asks, between steps, whether interactive work waits at any stage. If it
does, and the sampler resumes exactly (DDIM, Euler), the run stops: each job's latents so far
go to the store, its stage goes back to its queue without spending the attempt (keeping its
place by age), and a claim later goes on from that step. The process that gave way takes the
interactive work next, in the same task (as a chained stage).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from celery import Task
from sqlalchemy import select
from sqlalchemy.orm import Session

from producer.db import in_transaction
from producer.events import notify
from producer.models import ACTIVE, Job, StageRun, StageStatus
from producer.outbox import publish_many
from producer.pipeline import STAGES, queue_name
from producer.scheduling import interactive_waiting
from worker.queue import handoff
from worker.queue.claims import Claimed
from worker.queue.commits import snooze_stage
from worker.queue.selection import claim_next
from worker.stages.runtime import Runtime

log = logging.getLogger(__name__)


# How often a bulk batch asks whether interactive work waits (a query; steps are shorter).
YIELD_CHECK_S = 0.05


def check(task: Task, runtime: Runtime) -> Callable[[], bool]:
    """What a bulk batch asks between steps: whether interactive work waits at a stage this
    worker serves (at most every ``YIELD_CHECK_S``)."""
    database, asked, served = runtime.settings.resolved_database_url, [0.0], _served(task)
    host = task.request.hostname

    def check() -> bool:
        now = time.monotonic()
        if now - asked[0] < YIELD_CHECK_S:
            return False
        asked[0] = now
        try:
            return in_transaction(
                database, lambda session: interactive_waiting(session, served, host)
            )
        except Exception:  # noqa: BLE001 - the database is away: go on, the monitor will tell
            return False

    return check


def give_way(task: Task, runtime: Runtime, runs: list[tuple[Claimed, int]]) -> None:
    """The runs (with the step each stopped after) go back to their queue without spending
    the attempt, in one transaction, and get messages of their own, sent together: claimed
    again (after the interactive work they gave way to), each goes on from its step."""
    settings = runtime.settings

    def snooze(session: Session) -> list[Claimed]:
        back = []
        for claim, step in runs:
            log.info("job %s %s: gave way after step %d", claim.job.id, claim.stage, step)
            # Fenced out: whoever holds the stage now sends it on.
            if snooze_stage(session, claim.job.id, claim.stage, claim.token):
                handoff.again(session, claim.job.id, claim.stage)
                back.append(claim)
        return back

    back = in_transaction(settings.resolved_database_url, snooze)
    for claim in back:
        notify(settings.resolved_redis_url, claim.job.id)
    messages = [(claim.job.id, claim.stage) for claim in back]
    publish_many(settings.resolved_database_url, task.app, messages)


def claim_interactive(task: Task, runtime: Runtime) -> Claimed | None:
    """The interactive run waiting longest at a stage this worker serves, claimed to run here
    now (the scheduler's first at that stage); None when there is none."""
    settings, served = runtime.settings, _served(task)

    def claim(session: Session) -> Claimed | None:
        found = session.execute(
            select(StageRun.job_id, StageRun.stage)
            .join(Job, Job.id == StageRun.job_id)
            .where(
                StageRun.stage.in_(served),
                StageRun.status == StageStatus.QUEUED.value,
                Job.lane == "interactive",
                Job.status.in_([status.value for status in ACTIVE]),
                Job.held.is_(False),
            )
            .order_by(Job.priority.desc(), StageRun.enqueued_at)
            .limit(1)
        ).first()
        if found is None:
            return None
        claimed = claim_next(
            session,
            found.stage,
            found.job_id,
            lease_seconds=settings.stage_lease_seconds,
            max_attempts=settings.stage_max_attempts,
            host=task.request.hostname,
        )
        return claimed if isinstance(claimed, Claimed) else None

    try:
        return in_transaction(settings.resolved_database_url, claim)
    except Exception:  # noqa: BLE001 - its own message will bring it to some worker
        log.warning("interactive work not claimed after giving way", exc_info=True)
        return None


def make_way(task: Task, runtime: Runtime, pending: list[Claimed]) -> list[Claimed]:
    """A batch's jobs still to run here go back to their queue (their attempts not spent) and
    the interactive work waiting runs here first: what ``pending`` becomes."""
    bulk = [claim for claim in pending if claim.job.lane != "interactive"]
    give_way(task, runtime, [(claim, 0) for claim in bulk])
    interactive = claim_interactive(task, runtime)
    kept = [claim for claim in pending if claim not in bulk]
    return kept + ([interactive] if interactive is not None else [])


def _served(task: Task) -> list[str]:
    """The stages whose queues this worker consumes."""
    return [stage for stage in STAGES if queue_name(stage) in task.app.amqp.queues.consume_from]
