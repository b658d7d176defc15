"""Over HTTP, end to end: a real API process, a real worker, Redis and PostgreSQL (the shared
``api_stack``), and a webhook receiver that is down at first."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from producer.db import in_transaction, session_scope
from producer.keys import create_key
from producer.models import WebhookDelivery
from producer.webhooks import EVENT_HEADER, SIGNATURE_HEADER, verify_signature
from testbed.deployments import Deployment
from tests.webhook_receiver import WebhookReceiver as Receiver
from tests.worker.conftest import WEBHOOK_SECRET as SECRET

pytestmark = pytest.mark.slow


def test_post_follow_events_download_and_receive_the_signed_webhook(
    api_stack: tuple[Deployment, str],
) -> None:
    dep, base = api_stack
    with session_scope(dep.settings.resolved_database_url) as session:
        _, key = create_key(session, "e2e")
    auth = {"Authorization": f"Bearer {key}"}
    receiver = Receiver(failures=2)
    body = {
        "prompt": "a red fox",
        "n": 2,
        "seed": 7,
        "steps": 6,
        "width": 64,
        "height": 64,
        "callback_url": receiver.url,
    }

    # 1. Submit over HTTP.
    posted = httpx.post(f"{base}/v1/jobs", json=body, headers=auth | {"Idempotency-Key": "e2e-1"})
    assert posted.status_code == 202, posted.text
    job = posted.json()
    again = httpx.post(f"{base}/v1/jobs", json=body, headers=auth | {"Idempotency-Key": "e2e-1"})
    assert again.json()["id"] == job["id"]

    # 2. Follow its events to the end.
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream("GET", job["urls"]["events"], headers=auth, timeout=120) as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind:
                events.append((kind, json.loads(line.removeprefix("data: "))))
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "end" and events[-1][1]["status"] == "succeeded"
    assert {"denoise", "score"} <= {data.get("stage") for kind, data in events if kind == "state"}
    # A reconnecting client gets the current (terminal) state at once.
    with httpx.stream("GET", job["urls"]["events"], headers=auth, timeout=30) as stream:
        assert "event: end" in stream.read().decode()

    # 3. Download an image.
    final = events[-1][1]
    image = httpx.get(final["images"][1]["url"], headers=auth)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    # Named by its key in the store: no server folder shows (nor in the webhook below).
    assert final["images"][1]["uri"] == f"jobs/{job['id']}/image-1.png"
    artifacts = Path(dep.settings.resolved_artifacts_url)
    assert image.content == (artifacts / final["images"][1]["uri"]).read_bytes()

    # 4. The webhook arrives, signed, after two refused attempts, each one logged.
    deadline = time.monotonic() + 60
    while not receiver.received and time.monotonic() < deadline:
        time.sleep(0.2)
    assert receiver.received, "no webhook delivered"
    headers, payload = receiver.received[0]
    verify_signature(payload, headers.get(SIGNATURE_HEADER), SECRET)
    assert headers.get(EVENT_HEADER) == "job.finished"
    assert json.loads(payload)["job"]["status"] == "succeeded"
    assert str(artifacts) not in payload.decode()

    # The receiver answers before the sender records the answer: wait for the record.
    def delivery() -> WebhookDelivery:
        return in_transaction(
            dep.settings.resolved_database_url,
            lambda s: s.scalars(
                select(WebhookDelivery).where(WebhookDelivery.job_id == job["id"])
            ).one(),
        )

    deadline = time.monotonic() + 10
    while delivery().status == "pending" and time.monotonic() < deadline:
        time.sleep(0.1)
    recorded = delivery()
    assert (recorded.status, recorded.attempts) == ("delivered", 3)
    receiver.shutdown()
