"""The Celery side that producers and workers share: one configuration, enqueue by name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu import Queue

from producer import sqlbroker
from producer.pipeline import ALL_QUEUES, STAGES, queue_name, task_name
from producer.settings import Settings


def configure(app: Celery, settings: Settings) -> None:
    """Apply imggen's Celery settings; each one closes a known way to lose or repeat work."""
    time_limit = settings.stage_time_limit_seconds
    app.conf.update(
        broker_url=settings.resolved_broker_url,
        broker_connection_retry_on_startup=True,
        # JSON only: a pickle message injected into a queue is refused, never unpickled.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # SQL holds every result; Celery's result backend would be a second, weaker copy.
        task_ignore_result=True,
        # Ack after the stage finished, and hand the message back when a pool process dies,
        # so a killed worker loses nothing (the per-stage attempt cap in SQL ends crash loops).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One message at a time per process: a slow stage does not hold others hostage.
        worker_prefetch_multiplier=1,
        task_time_limit=time_limit,
        task_soft_time_limit=max(time_limit - 60, time_limit * 0.9),
        broker_transport_options=_transport_options(settings),
        # A worker that lost its broker connection cannot ack: cancel its tasks so that the
        # redelivered copies are the only ones (the lease fences any straggler anyway).
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # On SIGTERM: let stages run this long, then stop them and hand their messages back.
        worker_soft_shutdown_timeout=settings.worker_soft_shutdown_seconds,
        task_queues=[Queue(name) for name in ALL_QUEUES],
        task_default_queue=queue_name(STAGES[0]),
        task_routes={task_name(stage): {"queue": queue_name(stage)} for stage in STAGES},
        worker_hijack_root_logger=False,
        # The embedded SQL broker has no fanout exchange for remote control (ping, revoke);
        # imggen cancels through SQL, so nothing is lost without it.
        worker_enable_remote_control=not _is_sql_broker(settings),
    )


def carries_events(settings: Settings) -> bool:
    """Whether the broker can carry Celery's events (Flower's view): not the embedded SQL one."""
    return not _is_sql_broker(settings)


def _is_sql_broker(settings: Settings) -> bool:
    return settings.resolved_broker_url.startswith(("sqla+", "sqlalchemy+"))


def _transport_options(settings: Settings) -> dict[str, Any]:
    if _is_sql_broker(settings):
        sqlbroker.register()
        # Producers and workers write the same file: wait for its lock instead of failing.
        # kombu's channel keeps its session's connection from a queue lookup to its next
        # commit, and a process's channels share one engine: no cap on its connections (a
        # capped pool left the 16th channel waiting, and a worker's consumer died of it).
        return {
            "polling_interval": settings.broker_polling_interval,
            "connect_args": {"timeout": 30},
            "max_overflow": -1,
        }
    # Redis redelivers an unacked message after visibility_timeout, counted from the fetch, even
    # while it is still running: keep it above the longest stage.
    visibility = settings.broker_visibility_timeout_seconds or settings.stage_time_limit_seconds * 2
    return {
        "visibility_timeout": int(visibility),
        "polling_interval": settings.broker_polling_interval,
    }


_producer_apps: dict[str, Celery] = {}


def producer_app(settings: Settings) -> Celery:
    """A Celery app used only to send; one per broker URL, so connections are pooled."""
    key = settings.resolved_broker_url
    if key not in _producer_apps:
        app = Celery("imggen-producer", set_as_current=False)
        configure(app, settings)
        _producer_apps[key] = app
    return _producer_apps[key]


def queue_sizes(app: Celery, queues: Sequence[str]) -> dict[str, int]:
    """Messages waiting in each of ``queues`` (not those a worker has already taken).

    Raises whatever the broker raises when it cannot be reached.
    """
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        return {queue: channel.queue_declare(queue).message_count for queue in queues}


def enqueue_stage(
    app: Celery, job_id: str, stage: str, attempt: int = 0, producer: Any = None
) -> None:
    """Send the message that wakes a worker for ``stage`` of ``job_id``.

    The task id is deterministic per (job, stage, attempt), so a duplicate send is recognisable.
    ``producer``: a kombu producer to send with (many messages over one connection).
    """
    app.send_task(
        task_name(stage),
        args=[job_id],
        producer=producer,
        queue=queue_name(stage),
        task_id=f"{job_id}-{stage}-{attempt}",
        # One quick retry only: a message that cannot be sent stays in the outbox for the relay,
        # so a caller (a web request, say) is never held up by a broker that is down.
        retry=True,
        retry_policy={"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2},
    )
