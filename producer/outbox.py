"""The transactional outbox: stage messages are rows first, broker messages second.

A transaction that makes a stage runnable (submit, a finished stage, the sweeper) adds its
message here. After the commit the caller tries to publish at once; whatever that misses (the
broker was down, the process died between commit and publish) the relay publishes later. A row
is deleted only once the broker has taken the message, so none is lost; one may be published
twice, which the stage claim makes harmless.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from celery import Celery
from sqlalchemy import Executable, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from producer.backoff import backoff_seconds
from producer.db import in_transaction, session_scope
from producer.models import OutboxMessage, StageRun, utcnow
from producer.queue import enqueue_stage

log = logging.getLogger(__name__)


# Built once: every stage commit adds a message and every stage publishes one. A second add for
# the same stage does nothing (the row's unique key); PostgreSQL and SQLite say so in the INSERT.
_MESSAGE: dict[str, Any] = {"job_id": bindparam("job"), "stage": bindparam("stage_name")}
_ADD_MESSAGE: dict[str, Executable] = {
    "postgresql": postgresql.insert(OutboxMessage).values(_MESSAGE).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(OutboxMessage).values(_MESSAGE).on_conflict_do_nothing(),
}
_TAKE_MESSAGE = delete(OutboxMessage).where(
    OutboxMessage.job_id == bindparam("job"), OutboxMessage.stage == bindparam("stage_name")
)


def add_message(session: Session, job_id: str, stage: str, *, due: datetime | None = None) -> None:
    """Queue a message for ``stage`` of ``job_id`` in the caller's transaction (once per stage).

    ``due``: not to be sent before then (a retry's backoff); the relay sends it, not a fast path.
    """
    statement = _ADD_MESSAGE.get(session.get_bind().dialect.name)
    if statement is not None and due is None:
        session.connection().execute(statement, {"job": job_id, "stage_name": stage})
        return
    exists = session.scalar(
        select(OutboxMessage.id).where(OutboxMessage.job_id == job_id, OutboxMessage.stage == stage)
    )
    if exists is None:
        session.add(OutboxMessage(job_id=job_id, stage=stage, available_at=due or utcnow()))


def publish_now(database_url: str, app: Celery, job_id: str, stage: str) -> bool:
    """The fast path right after the commit that added the message: send it and delete its row.

    Returns False when the row was already gone (a relay sent it first). If the broker fails,
    the row stays for the relay and the error propagates. The transaction that added the row
    (submission, stage commit) already set the stage's ``sent_at``, so this is one statement.
    """

    def send(session: Session) -> bool:
        # The DELETE locks the row: a relay running now skips it (SKIP LOCKED) or, if it got
        # there first, has deleted it and this deletes nothing.
        taken = (
            session.connection()
            .execute(_TAKE_MESSAGE, {"job": job_id, "stage_name": stage})
            .rowcount
        )
        if taken:
            enqueue_stage(app, job_id, stage)  # raises: rolled back, the row stays for the relay
        return bool(taken)

    return in_transaction(database_url, send)


def publish_many(database_url: str, app: Celery, messages: list[tuple[str, str]]) -> int:
    """The fast path for many messages at once (a batch's first stages, the jobs of a run that
    gave way): (job id, stage) pairs sent in pipelined round trips over one broker connection
    (kombu's publish batches; one by one where the transport has none), then their rows
    dropped. If the broker fails, every row stays for the relay (some may go twice, which the
    stage claim makes harmless). Returns how many went."""
    try:
        with app.producer_or_acquire() as producer, producer.batch():
            for job_id, stage in messages:
                enqueue_stage(app, job_id, stage, producer=producer)
    except Exception:  # noqa: BLE001 - the broker is down: the relay sends them
        log.warning("%d messages left to the relay", len(messages), exc_info=True)
        return 0
    for start in range(0, len(messages), _DROP_CHUNK):
        chunk = messages[start : start + _DROP_CHUNK]
        in_transaction(database_url, partial(_drop_messages, chunk=chunk))
    return len(messages)


_DROP_CHUNK = 1000  # rows a DELETE names


def _drop_messages(session: Session, chunk: list[tuple[str, str]]) -> None:
    by_stage: dict[str, list[str]] = {}
    for job_id, stage in chunk:
        by_stage.setdefault(stage, []).append(job_id)
    for stage, job_ids in by_stage.items():
        session.execute(
            delete(OutboxMessage).where(
                OutboxMessage.stage == stage, OutboxMessage.job_id.in_(job_ids)
            )
        )


def publish_pending(
    database_url: str,
    app: Celery,
    *,
    min_age_s: float = 0.0,
    limit: int = 200,
) -> int:
    """The relay: publish waiting messages older than ``min_age_s``; returns how many.

    Stops at the first broker error: the broker is likely down, and the rows stay for later.
    """
    now = utcnow()
    query = select(OutboxMessage).where(
        OutboxMessage.available_at <= now - timedelta(seconds=min_age_s)
    )
    # SKIP LOCKED: several relays (one per worker) share the work instead of queueing on locks.
    query = query.order_by(OutboxMessage.id).limit(limit).with_for_update(skip_locked=True)
    published = 0
    try:
        with session_scope(database_url) as session:
            for message in session.scalars(query).all():
                try:
                    enqueue_stage(app, message.job_id, message.stage)
                except Exception as exc:  # noqa: BLE001 - any broker failure: keep the row
                    message.publish_attempts += 1
                    message.last_error = f"{type(exc).__name__}: {exc}"
                    delay = backoff_seconds(message.publish_attempts, base=2.0, cap=60.0)
                    message.available_at = utcnow() + timedelta(seconds=delay)
                    log.warning("publish of %s %s failed: %s", message.job_id, message.stage, exc)
                    break
                session.execute(
                    update(StageRun)
                    .where(StageRun.job_id == message.job_id, StageRun.stage == message.stage)
                    .values(sent_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
                session.delete(message)
                published += 1
    except IntegrityError:  # a concurrent relay deleted the same row first
        return published
    return published
