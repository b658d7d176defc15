"""Sending due webhooks from threads of their own, apart from the outbox relay and lease recovery.

A receiver is an untrusted peer that may accept a connection and never answer. So deliveries run
in a bounded pool (``webhook_concurrency``), at most ``webhook_per_host`` at once to one host,
each bounded by a timeout, and no database transaction stays open during a POST. A slow host
holds up only its own deliveries; the relay and the sweeper never wait on any of them.

A delivery is claimed by moving its ``next_attempt_at`` past the time its POST can take, in a
conditional UPDATE: several senders (one per worker) never send the same attempt, and one that
dies mid-send leaves the delivery due again once that time has passed.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from producer.db import in_transaction
from producer.keys import webhook_secrets
from producer.models import ApiKey, Job, WebhookDelivery, utcnow
from producer.settings import Settings
from producer.webhooks import post_delivery, record_outcome

log = logging.getLogger(__name__)


class WebhookSender:
    def __init__(
        self,
        database_url: str,
        secret: str | None,
        *,
        max_attempts: int,
        allowed_hosts: Collection[str] = (),
        concurrency: int = 8,
        per_host: int = 2,
        timeout_s: float = 10.0,
        secret_grace_s: float = 86400.0,
    ) -> None:
        self.db, self.secret, self.max_attempts = database_url, secret, max_attempts
        self.secret_grace_s = secret_grace_s
        self.allowed_hosts = tuple(allowed_hosts)
        self.concurrency, self.per_host, self.timeout_s = concurrency, per_host, timeout_s
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="imggen-webhook")
        self._http = httpx.Client(timeout=timeout_s, follow_redirects=False)
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()  # host -> deliveries being sent

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookSender:
        return cls(
            settings.resolved_database_url,
            settings.webhook_secret,
            max_attempts=settings.webhook_max_attempts,
            allowed_hosts=settings.webhook_allowed_hosts,
            concurrency=settings.webhook_concurrency,
            per_host=settings.webhook_per_host,
            timeout_s=settings.webhook_timeout_seconds,
            secret_grace_s=settings.webhook_secret_grace_seconds,
        )

    def pump(self) -> int:
        """Start sending as many due deliveries as the limits allow; returns how many."""
        return len(self._start_due())

    def _start_due(self) -> list[Future[bool]]:
        with self._lock:
            free = self.concurrency - sum(self._in_flight.values())
        if free <= 0:
            return []
        now = utcnow()
        query = (
            select(WebhookDelivery.id, WebhookDelivery.url)
            .join(Job, Job.id == WebhookDelivery.job_id)
            .outerjoin(ApiKey, ApiKey.id == Job.owner_key_id)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.id)
            .limit(200)
        )
        if self.secret is None:  # only what a key's own secret can sign
            query = query.where(ApiKey.webhook_secret.is_not(None))
        due = in_transaction(self.db, lambda session: session.execute(query).all())
        started: list[Future[bool]] = []
        for delivery_id, url in due:
            if len(started) == free:
                break
            host = (urlsplit(url).hostname or "").lower()
            with self._lock:
                if self._in_flight[host] >= self.per_host:
                    continue
            if not self._claim(delivery_id, now):
                continue  # another sender took it
            with self._lock:
                self._in_flight[host] += 1
            started.append(self._pool.submit(self._send, delivery_id, host))
        return started

    def _claim(self, delivery_id: int, now: datetime) -> bool:
        # Past the time a POST can take (connect, write, read), with room to record it.
        until = utcnow() + timedelta(seconds=self.timeout_s * 3 + 5)
        claim = (
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= now,
            )
            .values(next_attempt_at=until)
            .execution_options(synchronize_session=False)
        )
        return bool(
            in_transaction(self.db, lambda session: session.connection().execute(claim).rowcount)
        )

    def _send(self, delivery_id: int, host: str) -> bool:
        try:
            url, event, payload, signing = in_transaction(self.db, self._read(delivery_id))
            outcome = post_delivery(self._http, url, event, payload, signing, self.allowed_hosts)
            return in_transaction(
                self.db,
                lambda session: record_outcome(
                    session, session.get(WebhookDelivery, delivery_id), outcome, self.max_attempts
                ),
            )
        except Exception:  # noqa: BLE001 - the claim runs out and another pass retries it
            log.warning("webhook delivery %s not recorded", delivery_id, exc_info=True)
            return False
        finally:
            with self._lock:
                self._in_flight[host] -= 1

    def _read(self, delivery_id: int) -> Callable[[Session], tuple[str, str, str, list[str]]]:
        def read(session: Session) -> tuple[str, str, str, list[str]]:
            delivery = session.get(WebhookDelivery, delivery_id)
            assert delivery is not None
            job = session.get(Job, delivery.job_id)
            key = session.get(ApiKey, job.owner_key_id) if job and job.owner_key_id else None
            signing = webhook_secrets(key, self.secret, self.secret_grace_s)
            return delivery.url, delivery.event, delivery.payload, signing

        return read

    def deliver_once(self, timeout_s: float | None = None) -> int:
        """One pass, waiting for its sends: how many deliveries were accepted (``--once``)."""
        done, _ = wait(self._start_due(), timeout=timeout_s)
        return sum(1 for future in done if future.result())

    def run_forever(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        while not stop.wait(interval_s):
            try:
                self.pump()
            except Exception:  # noqa: BLE001 - database down: try again next pass
                log.warning("webhook pass failed", exc_info=True)
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()
