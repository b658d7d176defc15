"""Webhook signatures: what the receiver's helper accepts and refuses."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from producer.webhooks import WebhookSignatureError, sign, verify_signature

SECRET = "s3cret"
BODY = b'{"event":"job.finished","job":{"id":"abc"}}'


def test_a_genuine_signature_verifies() -> None:
    verify_signature(BODY, sign(BODY, SECRET), SECRET)


# Headers are signed when the test runs, not when it is collected: a suite that takes longer
# than the tolerance would otherwise see the "fresh" ones as replays.
@pytest.mark.parametrize(
    ("body", "make_header", "reason"),
    [
        (BODY, lambda: None, "missing"),
        (BODY, lambda: "v1=abc", "malformed"),
        (BODY + b" ", lambda: sign(BODY, SECRET), "does not match"),
        (BODY, lambda: sign(BODY, "other secret"), "does not match"),
        (BODY, lambda: sign(BODY, SECRET, timestamp=int(time.time()) - 3600), "tolerance"),
    ],
    ids=["missing", "malformed", "body changed", "other secret", "too old"],
)
def test_tampered_missing_or_old_signatures_are_refused(
    body: bytes, make_header: Callable[[], str | None], reason: str
) -> None:
    with pytest.raises(WebhookSignatureError, match=reason):
        verify_signature(body, make_header(), SECRET)
