"""Fault injection: every stage message is published twice (loaded into workers with --include).

The original publishes are counted per task id in Redis, so a test can also check that each
stage was enqueued once by imggen itself.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery
from celery.signals import after_task_publish

COUNTS_KEY = "chaos:original-publishes"


def install(app: Celery, broker_url: str) -> Any:
    connection = redis.Redis.from_url(broker_url)

    def publish_again(
        sender: str, headers: dict[str, Any], body: Any, routing_key: str, **_: Any
    ) -> None:
        if headers.get("imggen_duplicate") or headers.get("retries"):
            return
        connection.hincrby(COUNTS_KEY, headers["id"], 1)
        args, kwargs, _embed = body
        app.send_task(
            sender,
            args=args,
            kwargs=kwargs,
            queue=routing_key,
            task_id=headers["id"],
            headers={"imggen_duplicate": True},
        )

    after_task_publish.connect(publish_again, weak=False)
    return publish_again


if os.environ.get("IMGGEN_BROKER_URL", "").startswith("redis://"):
    from worker.app import app as _worker_app

    install(_worker_app, os.environ["IMGGEN_BROKER_URL"])
