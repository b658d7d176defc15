"""The Celery app that workers run: ``celery -A worker.app worker`` (or ``imggen worker``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from producer.db import dispose_engines_after_fork
from producer.queue import configure
from worker.settings import get_worker_settings

app = Celery("imggen", include=["worker.tasks"])
configure(app, get_worker_settings())

_threads: list[tuple[threading.Thread, threading.Event]] = []


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Pool processes are forked from the main one, which holds the sweeper's connections.
    dispose_engines_after_fork()


@worker_ready.connect
def _start_background_threads(sender: Any = None, **_: Any) -> None:
    """Every worker relays the outbox, re-sends lost stages and sends webhooks (each on threads
    of its own), so no extra process is needed, and watches that it still consumes."""
    settings = get_worker_settings()
    if settings.sweep_interval_seconds > 0:
        from producer.webhook_sender import WebhookSender
        from worker.queue.sweeper import Sweeper

        _threads.append(_start(Sweeper(settings, app).run_forever, "imggen-sweeper"))
        webhooks = WebhookSender.from_settings(settings)
        _threads.append(_start(webhooks.run_forever, "imggen-webhooks"))
    if settings.stall_after_seconds > 0 and sender is not None:
        from worker.queue.watchdog import ConsumerWatchdog

        queues = [queue.name for queue in sender.task_consumer.queues]
        watchdog = ConsumerWatchdog(settings, app, queues)
        _threads.append(_start(watchdog.run_forever, "imggen-watchdog"))


def _start(
    target: Callable[[threading.Event], None], name: str
) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
    thread.start()
    return thread, stop


@worker_shutdown.connect
def _stop_background_threads(**kwargs: Any) -> None:
    for _thread, stop in _threads:
        stop.set()
    for thread, _stop in _threads:
        thread.join(timeout=10)
