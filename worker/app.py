"""The Celery app that workers run: ``celery -A worker.app worker`` (or ``imggen worker``)."""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from producer.db import dispose_engines_after_fork
from producer.queue import configure
from producer.settings import get_settings

app = Celery("imggen", include=["worker.tasks"])
configure(app, get_settings())

_sweeper: tuple[threading.Thread, threading.Event] | None = None


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Pool processes are forked from the main one, which holds the sweeper's connections.
    dispose_engines_after_fork()


@worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    """Every worker relays the outbox and re-sends lost stages, so no extra process is needed."""
    global _sweeper
    settings = get_settings()
    if settings.sweep_interval_seconds > 0:
        from worker.sweeper import Sweeper

        _sweeper = Sweeper(settings, app).start()


@worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    if _sweeper is not None:
        thread, stop = _sweeper
        stop.set()
        thread.join(timeout=10)
