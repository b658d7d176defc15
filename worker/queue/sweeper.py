"""The relay and sweeper: make SQL's view of what should run true in the broker.

Run by every ``imggen worker`` (a thread in its main process) or on its own (``imggen sweeper``).
Each pass:

1. publishes outbox messages that the fast path missed (broker down at commit, process died);
2. re-sends stages whose lease expired while running (the worker was killed, its message was
   acked by a hard time limit, or lost with an embedded broker);
3. re-sends queued stages whose message was sent long ago and never claimed, when their queue
   in the broker is empty (a broker restart that lost its queues). A stage waiting behind others
   in a deep queue is left alone;
4. evicts the least recently used latent cache entries beyond the configured size.

Several sweepers may run at once: a message sent twice is harmless, the stage claim decides.
Webhooks are sent apart from all this, by the webhook sender (producer.webhook_sender), so a
receiver that never answers cannot hold up recovery.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from celery import Celery
from sqlalchemy import select

from producer.artifacts import ArtifactStore
from producer.db import in_transaction, session_scope
from producer.models import ACTIVE, Job, OutboxMessage, StageRun, StageStatus, utcnow
from producer.outbox import add_message, publish_pending
from producer.pipeline import STAGES, queue_name
from producer.queue import queue_sizes
from worker.settings import WorkerSettings
from worker.stages import latent_cache

log = logging.getLogger(__name__)
_ACTIVE = [status.value for status in ACTIVE]


@dataclass
class SweepReport:
    published: int = 0
    expired_leases: int = 0
    stale_queued: int = 0


class Sweeper:
    def __init__(self, settings: WorkerSettings, app: Celery) -> None:
        self.settings, self.app = settings, app
        self.db = settings.resolved_database_url

    def run_once(self) -> SweepReport:
        report = SweepReport()
        now = utcnow()
        stale_before = now - timedelta(seconds=self.settings.resolved_requeue_after_seconds)
        with session_scope(self.db) as session:
            waiting = select(OutboxMessage.id).where(
                OutboxMessage.job_id == StageRun.job_id, OutboxMessage.stage == StageRun.stage
            )
            active_stage = (
                select(StageRun)
                .join(Job, Job.id == StageRun.job_id)
                .where(Job.status.in_(_ACTIVE), ~waiting.exists())
            )
            expired = session.scalars(
                active_stage.where(
                    StageRun.status == StageStatus.RUNNING.value,
                    StageRun.lease_expires_at < now,
                    # Once per expiry: not again while that re-sent message waits in the queue.
                    StageRun.sent_at.is_(None)
                    | (StageRun.sent_at < StageRun.lease_expires_at)
                    | (StageRun.sent_at < stale_before),
                ).limit(500)
            ).all()
            empty_queues = self._empty_stage_queues()
            stale = session.scalars(
                active_stage.where(
                    StageRun.status == StageStatus.QUEUED.value,
                    StageRun.stage.in_(empty_queues),
                    StageRun.sent_at.is_not(None),
                    StageRun.sent_at < stale_before,
                ).limit(500)
            ).all()
            for run in [*expired, *stale]:
                add_message(session, run.job_id, run.stage)
            report.expired_leases, report.stale_queued = len(expired), len(stale)
        # Messages younger than the grace period are the fast path's to send.
        report.published = publish_pending(
            self.db, self.app, min_age_s=self.settings.relay_grace_seconds
        )
        evicted = in_transaction(
            self.db, lambda session: latent_cache.evict(session, self.settings.cache_max_entries)
        )
        store = ArtifactStore(self.settings.resolved_artifacts_url)
        for uri in evicted:
            store.delete(uri)
        if report.expired_leases or report.stale_queued:
            log.warning("sweeper: re-sent %s", report)
        return report

    def _empty_stage_queues(self) -> list[str]:
        """Stages whose broker queue holds no message (none if the broker cannot be asked)."""
        try:
            sizes = queue_sizes(self.app, [queue_name(stage) for stage in STAGES])
        except Exception:  # noqa: BLE001 - broker down: nothing can be judged lost now
            log.info("sweeper: broker queues unreadable", exc_info=True)
            return []
        return [stage for stage in STAGES if sizes[queue_name(stage)] == 0]

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.sweep_interval_seconds):
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - database or broker down: try again next pass
                log.warning("sweeper pass failed", exc_info=True)
