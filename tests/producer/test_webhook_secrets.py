"""Per-key webhook secrets: a key makes and rotates its own, its webhooks are signed with it
(with the previous one too during the grace period), others keep the deployment's."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from producer.db import session_scope
from producer.jobs import create_job, new_job_id
from producer.keys import authenticate
from producer.models import ApiKey, WebhookDelivery, utcnow
from producer.spec import validate_spec
from producer.webhook_sender import WebhookSender
from producer.webhooks import SIGNATURE_HEADER, WebhookSignatureError, verify_signature
from tests.producer.api_app import SMALL, Api
from tests.webhook_receiver import WebhookReceiver

DEPLOYMENT_SECRET = "deployment-secret"


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.shutdown()


def _key_id(api: Api, headers: dict[str, str]) -> int:
    secret = headers["Authorization"].removeprefix("Bearer ")
    with session_scope(api.settings.resolved_database_url) as session:
        key = authenticate(session, secret)
        assert key is not None
        return key.id


def _deliver(api: Api, key_id: int, url: str, deployment_secret: str | None) -> tuple[str, bytes]:
    """One webhook of a job of ``key_id``, sent by a real sender; what the receiver got."""
    db = api.settings.resolved_database_url
    with session_scope(db) as session:
        job = create_job(
            session,
            validate_spec(SMALL, ["127.0.0.1"]),
            "shapes",
            job_id=new_job_id(),
            owner_key_id=key_id,
        )
        session.add(
            WebhookDelivery(job_id=job.id, event="job.finished", url=url, payload='{"a":1}')
        )
    sender = WebhookSender(db, deployment_secret, max_attempts=3, allowed_hosts=["127.0.0.1"])
    assert sender.deliver_once(timeout_s=30) == 1
    sender.close()
    headers, body = api.received[-1]  # type: ignore[attr-defined]
    return headers[SIGNATURE_HEADER], body


def test_a_key_rotates_its_own_secret_and_both_sign_during_the_grace_period(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    api = Api(tmp_path)
    api.received = receiver.received  # type: ignore[attr-defined]
    mine, other = api.key, api.new_key("other")
    key_id = _key_id(api, mine)

    # Until a key has a secret of its own, the deployment's signs its webhooks.
    header, body = _deliver(api, key_id, receiver.url, DEPLOYMENT_SECRET)
    verify_signature(body, header, DEPLOYMENT_SECRET)

    first = api.http.post("/v1/webhook-secret", headers=mine).json()
    assert first["secret"].startswith("whsec_") and first["previous_signs_until"] is None
    header, body = _deliver(api, key_id, receiver.url, None)  # no deployment secret needed
    verify_signature(body, header, first["secret"])
    with pytest.raises(WebhookSignatureError):
        verify_signature(body, header, DEPLOYMENT_SECRET)

    second = api.http.post("/v1/webhook-secret", headers=mine).json()
    assert second["secret"] != first["secret"] and second["previous_signs_until"]
    header, body = _deliver(api, key_id, receiver.url, DEPLOYMENT_SECRET)
    assert header.count("v1=") == 2
    verify_signature(body, header, second["secret"])
    verify_signature(body, header, first["secret"])  # receivers not yet switched still verify

    # Past the grace period, only the new secret signs.
    with session_scope(api.settings.resolved_database_url) as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id)
            .values(webhook_secret_rotated_at=utcnow() - timedelta(days=2))
        )
    header, body = _deliver(api, key_id, receiver.url, DEPLOYMENT_SECRET)
    assert header.count("v1=") == 1
    with pytest.raises(WebhookSignatureError):
        verify_signature(body, header, first["secret"])

    # Another key's webhooks are untouched by this key's rotations.
    header, body = _deliver(api, _key_id(api, other), receiver.url, DEPLOYMENT_SECRET)
    verify_signature(body, header, DEPLOYMENT_SECRET)
    with session_scope(api.settings.resolved_database_url) as session:
        states = set(session.scalars(select(WebhookDelivery.status)))
    assert states == {"delivered"}
