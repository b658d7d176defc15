"""``POST /v1/webhook-secret``: a key makes (or rotates) the secret that signs its webhooks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from producer.api.deps import ApiSettings, CurrentKey
from producer.db import in_transaction
from producer.keys import rotate_webhook_secret
from producer.models import ApiKey

router = APIRouter(tags=["webhooks"])


class WebhookSecret(BaseModel):
    secret: str  # shown once: verify the X-Imggen-Signature of this key's webhooks with it
    previous_signs_until: str | None  # until then, each webhook carries the old signature too


@router.post("/v1/webhook-secret", response_model=WebhookSecret)
async def rotate(key: CurrentKey, settings: ApiSettings) -> Any:
    """Give the calling key a new webhook secret (its webhooks were signed with the
    deployment's secret until it had one of its own)."""

    def rotate_in(session: Any) -> tuple[str, str | None]:
        row = session.get(ApiKey, key.id)
        had_one = row.webhook_secret is not None
        secret = rotate_webhook_secret(session, row)
        grace = timedelta(seconds=settings.webhook_secret_grace_seconds)
        until = (row.webhook_secret_rotated_at + grace).isoformat() if had_one else None
        return secret, until

    secret, until = await run_in_threadpool(
        in_transaction, settings.resolved_database_url, rotate_in
    )
    return {"secret": secret, "previous_signs_until": until}
