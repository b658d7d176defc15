"""Submitting a job for an API key and waiting for its end: one path for every API surface (imggen's
own, the OpenAI Images API, the AUTOMATIC1111 API), so each has the same quotas, validation and
durability. Each surface translates these errors into its own error shape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from producer import quotas
from producer.client import Client, JobHandle
from producer.db import in_transaction
from producer.errors import InvalidJobSpec, JobNotFound
from producer.events import changes
from producer.jobs import get_job, job_view
from producer.models import TERMINAL, ApiKey

log = logging.getLogger(__name__)
TERMINAL_VALUES = frozenset(s.value for s in TERMINAL)


class StillRunning(Exception):
    """The job did not end within the time the request may wait; it goes on."""

    def __init__(self, job_id: str, waited_s: float) -> None:
        self.job_id, self.waited_s = job_id, waited_s
        super().__init__(
            f"job {job_id} is still running after {waited_s:g} s; it goes on: "
            f"GET /v1/jobs/{job_id} for its result"
        )


class ClientGone(Exception):
    """The caller disconnected while waiting; the job goes on."""


def submit_for_key(
    client: Client,
    key: ApiKey,
    fields: dict[str, Any],
    image: bytes | None = None,
    idempotency_key: str | None = None,
) -> JobHandle:
    """Validate, then record (counting it against the key's quotas in the same transaction) and
    enqueue the job (blocking: run it in a thread). A replayed idempotency key and a refused
    submission use no quota. Raises QuotaExceeded or InvalidJobSpec."""
    settings = client.settings

    def admit(session: Session) -> None:
        quotas.admit(
            session,
            key.id,
            redis_url=settings.resolved_redis_url,
            per_minute=settings.api_submissions_per_minute,
            max_in_flight=settings.api_max_in_flight,
        )

    try:
        return client.submit(
            image=image,
            owner_key_id=key.id,
            idempotency_key=idempotency_key,
            admit=admit,
            **fields,
        )
    except TypeError:  # a field that collides with one of submit's own arguments
        raise InvalidJobSpec({"body": "unknown fields"}) from None


def owned_view(client: Client, key: ApiKey, job_id: str) -> dict[str, Any] | None:
    """The job as JSON if it exists and belongs to ``key``; None otherwise (blocking)."""

    def read(session: Any) -> dict[str, Any] | None:
        job = get_job(session, job_id, full=True)
        return job_view(job, place=True) if job.owner_key_id == key.id else None

    try:
        return in_transaction(client.settings.resolved_database_url, read)
    except JobNotFound:
        return None


async def wait_for_end(
    request: Request, client: Client, key: ApiKey, job_id: str, timeout_s: float
) -> dict[str, Any]:
    """The job's view once it is terminal, woken by the job events that workers publish (polling
    only without Redis). Raises StillRunning after ``timeout_s`` and ClientGone when the caller
    disconnects; in both cases the job goes on."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    events: AsyncGenerator[None, None] = changes(client.settings.resolved_redis_url, job_id)
    async with aclosing(events):
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise StillRunning(job_id, timeout_s)
            try:
                await asyncio.wait_for(anext(events), remaining)
            except asyncio.TimeoutError:  # noqa: UP041 - distinct from TimeoutError before 3.11
                raise StillRunning(job_id, timeout_s) from None
            view = await run_in_threadpool(owned_view, client, key, job_id)
            if view is None:
                raise JobNotFound(f"no job with id {job_id!r}")
            if view["status"] in TERMINAL_VALUES:
                return view
            if await request.is_disconnected():
                log.info("caller of job %s disconnected; the job goes on", job_id)
                raise ClientGone(job_id)


def kept_images(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The images a finished job keeps (best-of-N marks the others discarded)."""
    return [image for image in view["images"] if not image["discarded"]]
