"""Restart a worker that stopped consuming.

Celery workers on Redis can reconnect after a broker restart and then never take another
message (celery#8030, #8091, #10205, still open). The broker queue length alone does not show
it; an idle worker beside waiting messages does. When this worker has run nothing for
``IMGGEN_STALL_AFTER_SECONDS`` while its queues hold messages, it sends itself SIGHUP: Celery's
own restart (stop the consumer and pool, exec the same command line). Nothing is running then,
so nothing is lost.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from celery import Celery
from celery.worker import state

from producer.queue import queue_sizes
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


class ConsumerWatchdog:
    def __init__(self, settings: WorkerSettings, app: Celery, queues: list[str]) -> None:
        self.settings, self.app, self.queues = settings, app, queues
        self.idle_since: float | None = None

    def waiting_messages(self) -> int:
        return sum(queue_sizes(self.app, self.queues).values())

    def check(self, now: float) -> bool:
        """True when the worker has been idle beside waiting messages for too long."""
        busy = bool(state.active_requests or state.reserved_requests)
        if busy:
            self.idle_since = None
            return False
        try:
            waiting = self.waiting_messages()
        except Exception:  # noqa: BLE001 - broker down: Celery is reconnecting, not stalled
            self.idle_since = None
            return False
        if not waiting:
            self.idle_since = None
            return False
        self.idle_since = self.idle_since or now
        return now - self.idle_since >= self.settings.stall_after_seconds

    def run_forever(self, stop: threading.Event) -> None:
        # A look at the queues is a query per queue on the SQL broker: a few a minute do.
        every = min(5.0, self.settings.stall_after_seconds / 6)
        while not stop.wait(every):
            if self.check(time.monotonic()):
                log.error(
                    "worker idle for %.0f s beside waiting messages: restarting it",
                    self.settings.stall_after_seconds,
                )
                os.kill(os.getpid(), signal.SIGHUP)
                return
