"""Signed webhooks, delivered from a durable outbox with retries.

A job that names a ``callback_url`` gets a POST of its JSON when it ends (and, with
``callback_events="all"``, after each stage). Each delivery is a row written in the transaction
that changed the job; every worker's webhook sender (producer.webhook_sender) POSTs due rows,
logs every attempt, and retries failures with exponential backoff, so nothing is dropped while
the receiver is down.

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
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy.orm import Session

from producer.backoff import backoff_seconds
from producer.callbacks import CallbackRefused, resolve_target
from producer.errors import ImggenError
from producer.metrics import WEBHOOK_DELIVERIES, after_commit
from producer.models import WebhookAttempt, WebhookDelivery, utcnow

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Imggen-Signature"
EVENT_HEADER = "X-Imggen-Event"


class WebhookSignatureError(ImggenError):
    """A webhook's signature is missing, malformed, wrong, or too old."""


def sign(body: bytes, secret: str | Sequence[str], timestamp: int | None = None) -> str:
    """The signature header value for ``body``: one ``v1`` per secret (during a rotation, the
    new secret's and the previous one's)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + body
    digests = [
        hmac.new(key.encode(), signed, hashlib.sha256).hexdigest()
        for key in ([secret] if isinstance(secret, str) else secret)
    ]
    return ",".join([f"t={timestamp}", *(f"v1={digest}" for digest in digests)])


def verify_signature(
    body: bytes, header: str | None, secret: str, tolerance_s: float = 300
) -> None:
    """Check a received webhook; raises WebhookSignatureError unless it is genuine and recent."""
    if not header:
        raise WebhookSignatureError(f"missing {SIGNATURE_HEADER} header")
    try:
        pairs = [item.split("=", 1) for item in header.split(",")]
        timestamp = int(next(value for name, value in pairs if name == "t"))
        received = [value for name, value in pairs if name == "v1"]
    except (StopIteration, ValueError):
        raise WebhookSignatureError(f"malformed {SIGNATURE_HEADER} header") from None
    if not received:
        raise WebhookSignatureError(f"malformed {SIGNATURE_HEADER} header")
    if abs(time.time() - timestamp) > tolerance_s:
        raise WebhookSignatureError("timestamp outside the tolerance (a replay?)")
    expected = sign(body, secret, timestamp).split("v1=", 1)[1]
    if not any(hmac.compare_digest(expected, value) for value in received):
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


@dataclass(frozen=True)
class Outcome:
    """One attempt at a delivery: the receiver's status, or why it failed."""

    status_code: int | None
    error: str | None
    refused: bool  # the address is not allowed: never worth another attempt
    duration_ms: float


def post_delivery(
    http: httpx.Client,
    url: str,
    event: str,
    payload: str,
    secret: str | Sequence[str],
    allowed_hosts: Collection[str] = (),
) -> Outcome:
    """POST one signed delivery to the address its host resolves to now, checked as at submit
    (producer.callbacks); one that resolves to an internal address is not sent."""
    body = payload.encode()
    started = time.perf_counter()
    status_code, error, refused = None, None, False
    try:
        target = resolve_target(url, allowed_hosts)
        headers = {
            "Content-Type": "application/json",
            "Host": urlsplit(url).netloc,
            SIGNATURE_HEADER: sign(body, secret),
            EVENT_HEADER: event,
        }
        # TLS is checked against the name, while the connection goes to the checked address.
        response = http.post(
            target.url, content=body, headers=headers, extensions={"sni_hostname": target.host}
        )
        status_code = response.status_code
        if not response.is_success:
            error = f"HTTP {status_code}"
    except CallbackRefused as exc:
        error, refused = f"refused: callback_url {exc}", True
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return Outcome(status_code, error, refused, (time.perf_counter() - started) * 1000)


def record_outcome(
    session: Session, delivery: WebhookDelivery | None, outcome: Outcome, max_attempts: int
) -> bool:
    """Log the attempt and settle the delivery: delivered, failed for good, or due again after
    exponential backoff. Returns whether it was delivered."""
    if delivery is None or delivery.status != "pending":
        return False
    delivery.attempts += 1
    delivery.attempt_log.append(
        WebhookAttempt(
            status_code=outcome.status_code, error=outcome.error, duration_ms=outcome.duration_ms
        )
    )
    if outcome.error is None:
        delivery.status, delivery.delivered_at, delivery.last_error = "delivered", utcnow(), None
        after_commit(session, WEBHOOK_DELIVERIES.labels("delivered").inc)
        return True
    delivery.last_error = outcome.error
    if outcome.refused or delivery.attempts >= max_attempts:
        delivery.status = "failed"
        log.warning("webhook %s to %s given up: %s", delivery.id, delivery.url, outcome.error)
        after_commit(session, WEBHOOK_DELIVERIES.labels("gave_up").inc)
    else:
        delay = backoff_seconds(delivery.attempts, base=2.0, cap=600.0)
        delivery.next_attempt_at = utcnow() + timedelta(seconds=delay)
        after_commit(session, WEBHOOK_DELIVERIES.labels("retrying").inc)
    return False
