"""Per-key limits that hold across API processes: submissions per minute, jobs in flight.

Submissions are counted in Redis (one counter per key and minute) when Redis is configured, and
in SQL otherwise; jobs in flight are always counted in SQL, which every process shares.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from producer.models import ACTIVE, Job, utcnow


@lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


@dataclass(frozen=True)
class QuotaExceeded:
    reason: str
    retry_after_s: int


def check_quota(
    session: Session,
    key_id: int,
    *,
    redis_url: str | None,
    per_minute: int,
    max_in_flight: int,
) -> QuotaExceeded | None:
    """None if the key may submit one more job now (and count it), else why not."""
    in_flight = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.owner_key_id == key_id, Job.status.in_([s.value for s in ACTIVE]))
    )
    if (in_flight or 0) >= max_in_flight:
        return QuotaExceeded(f"{in_flight} jobs in flight, the limit is {max_in_flight}", 5)
    now = time.time()
    retry_after = int(60 - now % 60) + 1
    if redis_url is not None:
        counter = f"imggen:quota:{key_id}:{int(now // 60)}"
        connection = _redis(redis_url)
        with connection.pipeline() as pipe:
            pipe.incr(counter)
            pipe.expire(counter, 120)
            count, _ = pipe.execute()
        if count > per_minute:
            return QuotaExceeded(f"more than {per_minute} submissions this minute", retry_after)
        return None
    recent = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.owner_key_id == key_id, Job.created_at > utcnow() - timedelta(minutes=1))
    )
    if (recent or 0) >= per_minute:
        return QuotaExceeded(
            f"{recent} submissions in the last minute, the limit is {per_minute}", 60
        )
    return None
