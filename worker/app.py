"""The Celery app that workers run: ``celery -A worker.app worker`` (or ``imggen worker``)."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from producer import logs, metrics
from producer.db import dispose_engines_after_fork
from producer.queue import configure
from worker.settings import get_worker_settings

app = Celery("imggen", include=["worker.tasks"])
configure(app, get_worker_settings())

log = logging.getLogger(__name__)
_threads: list[tuple[threading.Thread, threading.Event]] = []
_node: dict[str, Any] = {}  # the worker's node name and queues, for its processes' heartbeats


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: Any) -> None:
    logs.use_format(get_worker_settings().log_format, logger.handlers)


@worker_init.connect
def _remember_node(sender: Any = None, **_: Any) -> None:
    _node.update(hostname=sender.hostname, queues=sorted(sender.app.amqp.queues.consume_from))


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Pool processes are forked from the main one, which holds the sweeper's connections.
    dispose_engines_after_fork()
    _threads.clear()  # the main process's threads, which do not run in this one
    _start_heartbeat()


@worker_process_shutdown.connect
def _pool_process_exits(**_: Any) -> None:
    _stop_background_threads()
    metrics.process_exited(os.getpid())


def _start_heartbeat() -> None:
    settings = get_worker_settings()
    if settings.heartbeat_seconds <= 0:
        # No beats: the registry is written once, at start.
        from worker.registry import Registry

        try:
            Registry(settings, _node.get("hostname") or socket.gethostname()).refresh()
        except Exception:  # noqa: BLE001 - the producer then judges by the models folder
            log.warning("model registry not written", exc_info=True)
        return
    from worker.heartbeat import Heartbeat
    from worker.stages.runtime import get_runtime

    beat = Heartbeat(
        settings,
        _node.get("hostname"),
        _node.get("queues", []),
        lambda: get_runtime().resident_models(),
    )
    _threads.append(_start(beat.run_forever, "imggen-heartbeat"))


@worker_ready.connect
def _start_background_threads(sender: Any = None, **_: Any) -> None:
    """Every worker relays the outbox, re-sends lost stages and sends webhooks (each on threads
    of its own), so no extra process is needed, and watches that it still consumes."""
    settings = get_worker_settings()
    if sender is not None and not _forks(sender):
        _start_heartbeat()  # the stages run in this process
    if settings.metrics_port > 0:
        _serve_metrics(settings.metrics_port)
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


def _forks(consumer: Any) -> bool:
    from celery.concurrency.prefork import TaskPool

    return isinstance(consumer.pool, TaskPool)


def _serve_metrics(port: int) -> None:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    if not os.environ.get(metrics.MULTIPROC_ENV):
        log.warning(
            "metrics: %s is not set, so only this process's metrics are served (start workers "
            "with `imggen worker`, which sets it)",
            metrics.MULTIPROC_ENV,
        )
        start_http_server(port)
        return
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    start_http_server(port, registry=registry)


def _start(
    target: Callable[[threading.Event], None], name: str
) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
    thread.start()
    return thread, stop


@worker_shutdown.connect
def _stop_background_threads(**_: Any) -> None:
    for _thread, stop in _threads:
        stop.set()
    for thread, _stop in _threads:
        thread.join(timeout=10)
