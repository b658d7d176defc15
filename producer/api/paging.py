"""Pages of jobs over HTTP: the query parameters the job lists share, and their cursor (the
last job's creation time and id, opaque to callers)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated

from fastapi import HTTPException, Query, status

from producer.jobs import is_job_id
from producer.models import JobStatus

StatusFilter = Annotated[JobStatus | None, Query(alias="status")]
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(max_length=200)]


def encode_cursor(following: tuple[datetime, str]) -> str:
    created, job_id = following
    return base64.urlsafe_b64encode(f"{created.isoformat()}|{job_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created, id) of a cursor this API made; 422 naming ``cursor`` otherwise."""
    try:
        created, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        if not is_job_id(job_id):
            raise ValueError(job_id)
        return datetime.fromisoformat(created), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "loc": ["query", "cursor"],
                    "msg": "not a cursor from this API",
                    "type": "value_error",
                }
            ],
        ) from None
