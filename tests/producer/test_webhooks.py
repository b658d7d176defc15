"""Webhook signatures: what the receiver's helper accepts and refuses."""

from __future__ import annotations

import time

import pytest

from producer.webhooks import WebhookSignatureError, sign, verify_signature

SECRET = "s3cret"
BODY = b'{"event":"job.finished","job":{"id":"abc"}}'


def test_a_genuine_signature_verifies() -> None:
    verify_signature(BODY, sign(BODY, SECRET), SECRET)


@pytest.mark.parametrize(
    ("body", "header", "reason"),
    [
        (BODY, None, "missing"),
        (BODY, "v1=abc", "malformed"),
        (BODY + b" ", sign(BODY, SECRET), "does not match"),
        (BODY, sign(BODY, "other secret"), "does not match"),
        (BODY, sign(BODY, SECRET, timestamp=int(time.time()) - 3600), "tolerance"),
    ],
)
def test_tampered_missing_or_old_signatures_are_refused(
    body: bytes, header: str | None, reason: str
) -> None:
    with pytest.raises(WebhookSignatureError, match=reason):
        verify_signature(body, header, SECRET)
