"""Loaded into a worker with ``--include``: what the worker publishes, and one failure on demand.

- Every stage message the worker itself publishes is counted per task name in Redis, so a test
  can tell which stages went through the broker.
- ``IMGGEN_TEST_FAIL_ONCE=<stage>`` makes that stage raise a transient error the first time it
  runs for each job (marked in Redis, so across pool processes).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import redis
from celery.signals import after_task_publish

from worker.stages import STAGES

PUBLISHES_KEY = "test:worker-publishes"
FAILED_KEY = "test:failed-once"


def _count_publishes(connection: redis.Redis) -> None:
    def count(sender: str, **_: Any) -> None:
        connection.hincrby(PUBLISHES_KEY, sender, 1)

    after_task_publish.connect(count, weak=False)


_failing: dict[str, Any] = {}  # the stage that fails once, its real function, and Redis


def failing_once(context: Any) -> Any:
    stage, real, connection = _failing["stage"], _failing["real"], _failing["connection"]
    if connection.sadd(FAILED_KEY, f"{context.job_id}:{stage}"):
        raise ConnectionError(f"injected: {stage} of {context.job_id} fails once")
    return real(context)


def _fail_once(connection: redis.Redis, stage: str) -> None:
    assert not STAGES[stage].batched, "a batched stage takes every job's context at once"
    _failing.update(stage=stage, real=STAGES[stage].load(), connection=connection)
    STAGES[stage] = dataclasses.replace(STAGES[stage], function=f"{__name__}:failing_once")


if os.environ.get("IMGGEN_BROKER_URL", "").startswith("redis://"):
    _connection = redis.Redis.from_url(os.environ["IMGGEN_BROKER_URL"])
    _count_publishes(_connection)
    if os.environ.get("IMGGEN_TEST_FAIL_ONCE"):
        _fail_once(_connection, os.environ["IMGGEN_TEST_FAIL_ONCE"])
