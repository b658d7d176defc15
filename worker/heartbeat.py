"""Each worker process says, every few seconds, that it is alive and what it does.

One row per process in ``worker_heartbeats`` (``producer.overview.workers`` reads them): the
queues it consumes, the diffusion models it holds, the job and stage it runs. What it runs is
noted in memory when a stage starts (``running``) and written by the beat, so a stage costs no
extra write; the dashboard's view of it lags by at most one beat. A process that stops cleanly
removes its row; one that is killed leaves a row that ages out. Each beat also keeps the
host's entries in the model registry (``worker/registry.py``) in step with its folders.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import delete

from producer.db import in_transaction
from producer.models import WorkerHeartbeat, utcnow
from worker.registry import Registry
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

_current: tuple[str, str] | None = None  # (job id, stage) this process runs


@contextmanager
def running(job_id: str, stage: str) -> Iterator[None]:
    """Note that this process runs ``stage`` of ``job_id`` (for the next beat)."""
    global _current
    _current = (job_id, stage)
    try:
        yield
    finally:
        _current = None


class Heartbeat:
    def __init__(
        self,
        settings: WorkerSettings,
        node: str | None,
        queues: Sequence[str],
        models: Callable[[], list[str]],
    ) -> None:
        self.settings, self.queues, self.models = settings, list(queues), models
        self.hostname = node or socket.gethostname()
        self.registry = Registry(settings, self.hostname)
        self.id = f"{self.hostname}/{os.getpid()}"
        self.started_at = utcnow()

    def beat(self) -> None:
        job = _current
        row = WorkerHeartbeat(
            id=self.id,
            hostname=self.hostname,
            pid=os.getpid(),
            queues=self.queues,
            models=self.models(),
            current_job_id=job[0] if job else None,
            current_stage=job[1] if job else None,
            started_at=self.started_at,
            last_seen_at=utcnow(),
        )
        in_transaction(self.settings.resolved_database_url, lambda session: session.merge(row))

    def remove(self) -> None:
        statement = delete(WorkerHeartbeat).where(WorkerHeartbeat.id == self.id)
        in_transaction(self.settings.resolved_database_url, lambda s: s.execute(statement))

    def run_forever(self, stop: threading.Event) -> None:
        while True:
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - a missed beat must not stop the beating
                log.warning("worker heartbeat not written", exc_info=True)
            try:
                self.registry.refresh()
            except Exception:  # noqa: BLE001 - tried again on the next beat
                log.warning("model registry not written", exc_info=True)
            if stop.wait(self.settings.heartbeat_seconds):
                break
        try:
            self.remove()
        except Exception:  # noqa: BLE001 - the row then ages out
            log.info("worker heartbeat row not removed", exc_info=True)
