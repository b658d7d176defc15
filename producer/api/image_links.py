"""Links to a job's images that work without an API key until they expire, as the OpenAI Images
API's ``url`` responses do.

A link is signed with the owning key's hash (kept only in SQL), so every API process can check
it, nothing new is stored, and revoking the key voids its links.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from producer.api.deps import ApiClient
from producer.artifacts import ArtifactStore
from producer.db import in_transaction
from producer.jobs import get_job, job_view
from producer.models import ApiKey

router = APIRouter(tags=["images"])


def _signature(key_hash: str, job_id: str, index: int, expires: int) -> str:
    message = f"{job_id}/{index}/{expires}".encode()
    return hmac.new(key_hash.encode(), message, hashlib.sha256).hexdigest()


def signed_url(request: Request, key: ApiKey, job_id: str, index: int, ttl_s: int) -> str:
    expires = int(time.time()) + ttl_s
    base = request.url_for("get_linked_image", job_id=job_id, index=index)
    return f"{base}?expires={expires}&signature={_signature(key.key_hash, job_id, index, expires)}"


@router.get(
    "/v1/images/files/{job_id}/{index}.png",
    name="get_linked_image",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
        403: {"description": "The link is not valid, or it expired."},
    },
)
async def get_linked_image(
    job_id: str,
    index: int,
    client: ApiClient,
    expires: Annotated[int, Query(ge=0, le=2**62)] = 0,
    signature: Annotated[str, Query(max_length=128)] = "",
) -> Response:
    """One image of a job, by a signed link from an OpenAI-style ``url`` response (no key)."""

    def read(session: Any) -> tuple[str | None, dict[str, Any]] | None:
        job = get_job(session, job_id, full=True)
        key = session.scalar(select(ApiKey).where(ApiKey.id == job.owner_key_id))
        if key is None or key.revoked_at is not None:
            return None
        return key.key_hash, job_view(job)

    refused = HTTPException(status.HTTP_403_FORBIDDEN, detail="this link is not valid or expired")
    if expires < time.time():
        raise refused
    try:
        found = await run_in_threadpool(in_transaction, client.settings.resolved_database_url, read)
    except LookupError:
        raise refused from None
    if found is None:
        raise refused
    key_hash, view = found
    if not key_hash or not hmac.compare_digest(
        signature, _signature(key_hash, job_id, index, expires)
    ):
        raise refused
    image = next((i for i in view["images"] if i["index"] == index), None)
    if image is None:
        raise refused
    store = ArtifactStore(client.settings.resolved_artifacts_url)
    return Response(await run_in_threadpool(store.get, image["uri"]), media_type="image/png")
