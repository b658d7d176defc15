"""Job change notifications across processes: workers publish, API processes wait.

A notification carries no state: it says "job X changed", and the listener reads the job from
SQL. So a missed or duplicated notification costs nothing but latency, a client that reconnects
gets the current state, and without Redis (the embedded default) listeners fall back to polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from functools import lru_cache

import redis
import redis.asyncio as aioredis

log = logging.getLogger(__name__)
POLL_S = 0.5  # without Redis, or as a safety net for a notification lost in transit


def channel(job_id: str) -> str:
    return f"imggen:job:{job_id}"


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


def notify(redis_url: str | None, job_id: str) -> None:
    """Tell listeners that ``job_id`` changed; best effort (they poll as well)."""
    if redis_url is None:
        return
    try:
        _client(redis_url).publish(channel(job_id), b"changed")
    except redis.RedisError:
        log.debug("job event for %s not published", job_id, exc_info=True)


async def changes(redis_url: str | None, job_id: str) -> AsyncGenerator[None, None]:
    """Yield whenever ``job_id`` may have changed (on notification, or every POLL_S). Without
    Redis, or while it does not answer, this polls."""
    if redis_url is not None:
        client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=1)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(channel(job_id))
            while True:
                yield
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_S * 4)
        except (redis.RedisError, OSError):
            log.info("job events from Redis unavailable; polling for %s", job_id, exc_info=True)
        finally:
            await pubsub.aclose()
            await client.aclose()
    while True:
        yield
        await asyncio.sleep(POLL_S)


async def deployment_changes(redis_url: str | None, every_s: float = 0.5) -> AsyncGenerator[None]:
    """Yield when any job may have changed: at most every ``every_s`` (a burst of changes is one
    wake-up), and at least every few seconds. Without Redis, or while it does not answer, this
    polls."""
    if redis_url is not None:
        client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=1)
        pubsub = client.pubsub()
        try:
            await pubsub.psubscribe(channel("*"))
            while True:
                yield
                await asyncio.sleep(every_s)
                while await pubsub.get_message(ignore_subscribe_messages=True, timeout=0):
                    pass  # the changes of the interval: the next read covers them all
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_S * 8)
        except (redis.RedisError, OSError):
            log.info("job events from Redis unavailable; polling", exc_info=True)
        finally:
            await pubsub.aclose()
            await client.aclose()
    while True:
        yield
        await asyncio.sleep(max(every_s, POLL_S * 2))


class Watch:
    """Blocking wake-ups on one job's changes, for code that waits in a thread (``Client.wait``,
    ``imggen wait``): ``wait(s)`` returns at the next notification, or after ``s`` seconds.
    Subscribed before the caller's first read, so no change falls between a read and the wait.
    Without Redis, or while it does not answer, it only sleeps."""

    def __init__(self, redis_url: str | None, job_id: str) -> None:
        self._pubsub: redis.client.PubSub | None = None
        if redis_url is None:
            return
        try:
            pubsub = _client(redis_url).pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(channel(job_id))
            self._pubsub = pubsub
        except redis.RedisError:
            log.info("job events from Redis unavailable; polling for %s", job_id, exc_info=True)

    @property
    def pushed(self) -> bool:
        """Whether changes are pushed (else each wait is a plain sleep)."""
        return self._pubsub is not None

    def wait(self, seconds: float) -> None:
        if self._pubsub is None:
            time.sleep(seconds)
            return
        try:
            self._pubsub.get_message(timeout=seconds)
        except (redis.RedisError, OSError):
            log.info("job events from Redis lost; polling", exc_info=True)
            self.close()
            time.sleep(seconds)

    def close(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                self._pubsub.close()
            self._pubsub = None

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
