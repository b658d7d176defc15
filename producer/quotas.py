"""Per-key limits that hold across API processes: submissions per minute, jobs in flight.

Checked inside the transaction that inserts the job, after the job is validated (a refused
submission uses up nothing), with the key's row locked first: concurrent submissions of one key
take turns, so "count, then insert" is one step and the in-flight limit holds under any
concurrency. Submissions are counted in Redis (one counter per key and minute) when Redis is
configured and answers, and in SQL otherwise; jobs in flight are always counted in SQL.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from functools import lru_cache

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from producer.models import ACTIVE, ApiKey, Job, utcnow

log = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


class QuotaExceeded(Exception):
    """The key may not submit now; nothing was written. ``retry_after_s``: when to try again."""

    def __init__(self, reason: str, retry_after_s: int) -> None:
        self.reason, self.retry_after_s = reason, retry_after_s
        super().__init__(reason)


def admit(
    session: Session,
    key_id: int,
    *,
    redis_url: str | None,
    per_minute: int,
    max_in_flight: int,
) -> None:
    """Count one more submission of the key in the caller's transaction, or raise
    QuotaExceeded (the caller rolls back)."""
    # Locks the key's row until the caller's commit (SQLite's writers already take turns).
    session.execute(select(ApiKey.id).where(ApiKey.id == key_id).with_for_update())
    in_flight = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.owner_key_id == key_id, Job.status.in_([s.value for s in ACTIVE]))
    )
    if (in_flight or 0) >= max_in_flight:
        raise QuotaExceeded(f"{in_flight} jobs in flight, the limit is {max_in_flight}", 5)
    count = _count_in_redis(redis_url, key_id) if redis_url is not None else None
    if count is not None:
        if count > per_minute:
            retry_after = int(60 - time.time() % 60) + 1
            raise QuotaExceeded(f"more than {per_minute} submissions this minute", retry_after)
        return
    recent = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.owner_key_id == key_id, Job.created_at > utcnow() - timedelta(minutes=1))
    )
    if (recent or 0) >= per_minute:
        raise QuotaExceeded(
            f"{recent} submissions in the last minute, the limit is {per_minute}", 60
        )


def _count_in_redis(url: str, key_id: int) -> int | None:
    """This minute's submissions of the key, counting this one; None if Redis does not answer
    (SQL counts instead: an outage of Redis must not stop submissions)."""
    counter = f"imggen:quota:{key_id}:{int(time.time() // 60)}"
    try:
        with _redis(url).pipeline() as pipe:
            pipe.incr(counter)
            pipe.expire(counter, 120)
            count, _ = pipe.execute()
    except redis.RedisError:
        log.warning("quota counter unreachable in Redis; counting in SQL", exc_info=True)
        return None
    return int(count)
