"""API keys: made once, shown once, stored as a hash."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from producer.models import ApiKey
from producer.spec import check_storable

KEY_PREFIX = "ig_"
MAX_NAME_CHARS = 100  # the column's size


def hash_key(key: str) -> str:
    # Keys are 256 random bits: a plain SHA-256 is enough, no slow password hash is needed.
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str) -> tuple[ApiKey, str]:
    """Make a key called ``name``; returns the row and the key itself (not stored anywhere).
    Raises ValueError for a name that is empty, too long or not storable text."""
    if not name.strip() or len(name) > MAX_NAME_CHARS:
        raise ValueError(f"name: must have 1 to {MAX_NAME_CHARS} characters")
    try:
        check_storable(name)
    except ValueError as exc:
        raise ValueError(f"name: {exc}") from None
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, key_hash=hash_key(key), prefix=key[:10])
    session.add(row)
    session.flush()
    return row, key


def authenticate(session: Session, key: str) -> ApiKey | None:
    """The live key matching ``key``, or None."""
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).one_or_none()
    return row if row is not None and row.revoked_at is None else None
