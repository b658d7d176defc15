"""API keys: made once, shown once, stored as a hash."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from producer.models import ApiKey, utcnow
from producer.spec import check_storable

KEY_PREFIX = "ig_"
WEBHOOK_SECRET_PREFIX = "whsec_"
MAX_NAME_CHARS = 100  # the column's size


def hash_key(key: str) -> str:
    # Keys are 256 random bits: a plain SHA-256 is enough, no slow password hash is needed.
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, *, admin: bool = False) -> tuple[ApiKey, str]:
    """Make a key called ``name``; returns the row and the key itself (not stored anywhere).
    Raises ValueError for a name that is empty, too long or not storable text."""
    if not name.strip() or len(name) > MAX_NAME_CHARS:
        raise ValueError(f"name: must have 1 to {MAX_NAME_CHARS} characters")
    try:
        check_storable(name)
    except ValueError as exc:
        raise ValueError(f"name: {exc}") from None
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, key_hash=hash_key(key), prefix=key[:10], admin=admin)
    session.add(row)
    session.flush()
    return row, key


def authenticate(session: Session, key: str) -> ApiKey | None:
    """The live key matching ``key``, or None."""
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).one_or_none()
    return row if row is not None and row.revoked_at is None else None


def rotate_webhook_secret(session: Session, key: ApiKey) -> str:
    """Give ``key`` a new webhook secret and return it; the one it replaces keeps signing too
    (a second signature) for the grace period, so a receiver can switch without a gap."""
    key.previous_webhook_secret = key.webhook_secret
    key.webhook_secret = WEBHOOK_SECRET_PREFIX + secrets.token_urlsafe(32)
    key.webhook_secret_rotated_at = utcnow()
    return key.webhook_secret


def webhook_secrets(key: ApiKey | None, deployment_secret: str | None, grace_s: float) -> list[str]:
    """The secrets that sign a webhook of ``key``'s job, newest first: its own (and, within the
    grace period after a rotation, the previous one), else the deployment's."""
    if key is None or key.webhook_secret is None:
        return [deployment_secret] if deployment_secret else []
    signing = [key.webhook_secret]
    rotated = key.webhook_secret_rotated_at
    if key.previous_webhook_secret and rotated is not None:
        if rotated.tzinfo is None:  # SQLite keeps no time zone
            rotated = rotated.replace(tzinfo=timezone.utc)
        if utcnow() - rotated < timedelta(seconds=grace_s):
            signing.append(key.previous_webhook_secret)
    return signing
