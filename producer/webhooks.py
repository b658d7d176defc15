"""Signed webhooks, delivered from a durable outbox with retries.

A job that names a ``callback_url`` gets a POST of its JSON when it ends (and, with
``callback_events="all"``, after each stage). Each delivery is a row written in the transaction
that changed the job; the sweeper POSTs due rows, logs every attempt, and retries failures with
exponential backoff, so nothing is dropped while the receiver is down.

Signature header (Stripe-style)::

    X-Imggen-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

Receivers check it with ``verify_signature``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from producer.db import session_scope
from producer.errors import ImggenError
from producer.models import WebhookAttempt, WebhookDelivery, utcnow

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Imggen-Signature"
EVENT_HEADER = "X-Imggen-Event"


class WebhookSignatureError(ImggenError):
    """A webhook's signature is missing, malformed, wrong, or too old."""


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The signature header value for ``body``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    body: bytes, header: str | None, secret: str, tolerance_s: float = 300
) -> None:
    """Check a received webhook; raises WebhookSignatureError unless it is genuine and recent."""
    if not header:
        raise WebhookSignatureError(f"missing {SIGNATURE_HEADER} header")
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp, received = int(parts["t"]), parts["v1"]
    except (KeyError, ValueError):
        raise WebhookSignatureError(f"malformed {SIGNATURE_HEADER} header") from None
    if abs(time.time() - timestamp) > tolerance_s:
        raise WebhookSignatureError("timestamp outside the tolerance (a replay?)")
    expected = sign(body, secret, timestamp).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, received):
        raise WebhookSignatureError("signature does not match")


def add_delivery(
    session: Session,
    job_id: str,
    spec: dict[str, Any] | None,
    event: str,
    payload: Callable[[], dict[str, Any]],
) -> None:
    """Queue a webhook for the job in the caller's transaction, if its ``spec`` asked for it.

    ``payload`` is called only then: most jobs have no webhook, and building one reads the job.
    """
    url = (spec or {}).get("callback_url")
    if not url:
        return
    if event != "job.finished" and (spec or {}).get("callback_events") != "all":
        return
    body = json.dumps({"event": event, "job": payload()}, sort_keys=True, separators=(",", ":"))
    session.add(WebhookDelivery(job_id=job_id, event=event, url=url, payload=body))


def deliver_due(
    database_url: str,
    secret: str | None,
    max_attempts: int,
    limit: int = 50,
    timeout_s: float = 10.0,
) -> int:
    """POST due deliveries; returns how many were accepted (2xx) in this pass."""
    if secret is None:
        return 0
    now = utcnow()
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    accepted = 0
    with session_scope(database_url) as session, httpx.Client(timeout=timeout_s) as http:
        for delivery in session.scalars(query).all():
            accepted += _attempt(http, delivery, secret, max_attempts)
    return accepted


def _attempt(http: httpx.Client, delivery: WebhookDelivery, secret: str, max_attempts: int) -> int:
    body = delivery.payload.encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(body, secret),
        EVENT_HEADER: delivery.event,
    }
    started = time.perf_counter()
    status_code, error = None, None
    try:
        response = http.post(delivery.url, content=body, headers=headers)
        status_code = response.status_code
        if not response.is_success:
            error = f"HTTP {status_code}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    delivery.attempts += 1
    delivery.attempt_log.append(
        WebhookAttempt(
            status_code=status_code, error=error, duration_ms=(time.perf_counter() - started) * 1000
        )
    )
    if error is None:
        delivery.status, delivery.delivered_at, delivery.last_error = "delivered", utcnow(), None
        return 1
    delivery.last_error = error
    if delivery.attempts >= max_attempts:
        delivery.status = "failed"
        log.warning("webhook %s to %s given up: %s", delivery.id, delivery.url, error)
    else:
        delay = min(2.0**delivery.attempts, 600.0)
        delivery.next_attempt_at = utcnow() + timedelta(seconds=delay)
    return 0
