"""The /v1/batches resource: a bulk run submitted at once, then watched and steered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from producer import batch_rows, batch_steering, batches
from producer.api.deps import ApiClient, CurrentKey
from producer.api.schemas import BatchList, BatchSubmitted, BatchView, FieldErrors
from producer.client import Client
from producer.db import in_transaction
from producer.errors import InvalidJobSpec
from producer.models import ApiKey, Batch

router = APIRouter(prefix="/v1/batches", tags=["batches"])
Name = Annotated[str, Query(min_length=1, max_length=200, description="Same name: resumes it.")]
STEERS = {
    "pause": batch_steering.pause,
    "resume": batch_steering.resume,
    "cancel": batch_steering.cancel,
    "retry-failed": batch_steering.retry_failed,
}
BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": {"type": "object"}},
                "example": [{"prompt": "a red fox"}, {"prompt": "a blue bird", "steps": 30}],
            },
            "application/x-ndjson": {
                "schema": {"type": "string", "description": "One JSON object (a job) a line."}
            },
        },
    }
}


def _rows(body: bytes, content_type: str) -> list[tuple[int, dict[str, Any]]]:
    """The body's rows, numbered from 1 (a JSON array's index, a JSONL body's line)."""
    try:
        if "ndjson" in content_type or "jsonl" in content_type:
            return batch_rows.read_json_lines(body.decode("utf-8"))
        rows = json.loads(body)
    except UnicodeDecodeError:
        raise _refused([batch_rows.RowError(0, "body", "must be UTF-8")]) from None
    except ValueError as exc:
        raise _refused([batch_rows.RowError(0, "body", f"not JSON: {exc}")]) from None
    except batch_rows.InvalidRows as exc:
        raise _refused(exc.errors) from None
    if not isinstance(rows, list):
        raise _refused([batch_rows.RowError(0, "body", "must be a JSON array of jobs")])
    bad = [
        batch_rows.RowError(i, "row", "must be an object")
        for i, row in enumerate(rows, 1)
        if not isinstance(row, dict)
    ]
    if bad:
        raise _refused(bad)
    return list(enumerate(rows, 1))


def _refused(errors: list[batch_rows.RowError]) -> HTTPException:
    """422 naming each bad row and field: ``loc`` is ["body", row, field]."""
    detail = [
        {"loc": ["body", str(e.line), e.field], "msg": e.reason, "type": "value_error"}
        for e in errors[:1000]
    ]
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail)


def _find(client: Client, key: ApiKey, batch_id: str) -> dict[str, Any]:
    def read(session: Session) -> dict[str, Any] | None:
        batch = batch_steering.find(session, batch_id, key.id)
        return batch_steering.summary(session, batch) if batch is not None else None

    view = in_transaction(client.settings.resolved_database_url, read)
    if view is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no batch with id {batch_id!r}")
    return view


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchSubmitted,
    openapi_extra=BODY,
    responses={422: {"model": FieldErrors, "description": "Bad rows; nothing was written."}},
)
async def submit_batch(
    request: Request,
    key: CurrentKey,
    client: ApiClient,
    name: Name,
    skip_invalid: Annotated[bool, Query(description="Submit the good rows, list the bad.")] = False,
) -> Any:
    """Submit a batch (bulk lane): a JSON array of jobs, or JSON lines. Every row is checked
    first; the same name resumes the batch (rows it holds are not submitted again)."""
    rows = _rows(await request.body(), request.headers.get("content-type", ""))
    try:
        done = await run_in_threadpool(
            batches.submit, client, name, rows, owner_key_id=key.id, skip_invalid=skip_invalid
        )
    except batch_rows.InvalidRows as exc:
        raise _refused(exc.errors) from None
    except InvalidJobSpec as exc:
        raise _refused([batch_rows.RowError(0, f, r) for f, r in exc.errors.items()]) from None
    view = await run_in_threadpool(_find, client, key, done.batch_id)
    body = {
        "batch": view,
        "submitted": done.submitted,
        "already": done.already,
        "invalid": [{"row": e.line, "field": e.field, "msg": e.reason} for e in done.invalid],
    }
    url = str(request.url_for("get_batch", batch_id=done.batch_id))
    return JSONResponse(body, status_code=status.HTTP_202_ACCEPTED, headers={"Location": url})


@router.get("", response_model=BatchList)
async def list_batches(key: CurrentKey, client: ApiClient) -> Any:
    """The caller's batches, newest first (at most 100)."""

    def read(session: Session) -> list[dict[str, Any]]:
        query = (
            select(Batch)
            .where(Batch.owner_key_id == key.id)
            .order_by(Batch.created_at.desc())
            .limit(100)
        )
        return [batch_steering.summary(session, batch) for batch in session.scalars(query)]

    found = await run_in_threadpool(in_transaction, client.settings.resolved_database_url, read)
    return {"batches": found}


@router.get("/{batch_id}", response_model=BatchView)
async def get_batch(batch_id: str, key: CurrentKey, client: ApiClient) -> Any:
    """A batch's counts by status, images a second and ETA."""
    return await run_in_threadpool(_find, client, key, batch_id)


@router.post("/{batch_id}/{action}", response_model=BatchView)
async def steer_batch(batch_id: str, action: str, key: CurrentKey, client: ApiClient) -> Any:
    """`pause` (claim nothing more of it), `resume`, `cancel` (every job not ended) or
    `retry-failed` (queue its failed jobs again)."""
    if action not in STEERS:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"no action {action!r}: one of {', '.join(STEERS)}"
        )

    def steer(session: Session) -> bool:
        batch = batch_steering.find(session, batch_id, key.id)
        if batch is None:
            return False
        STEERS[action](session, batch)
        return True

    if not await run_in_threadpool(in_transaction, client.settings.resolved_database_url, steer):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no batch with id {batch_id!r}")
    return await run_in_threadpool(_find, client, key, batch_id)


@router.get("/{batch_id}/events")
async def batch_events(batch_id: str, key: CurrentKey, client: ApiClient) -> StreamingResponse:
    """Server-sent events: the batch's view once a second while it changes, to its end."""
    first = await run_in_threadpool(_find, client, key, batch_id)

    async def stream() -> AsyncIterator[str]:
        view, last = first, None
        while True:
            if view != last:
                yield f"event: batch\ndata: {json.dumps(view)}\n\n"
                last = view
            if view["done"] >= view["jobs"]:
                return
            await asyncio.sleep(1.0)
            view = await run_in_threadpool(_find, client, key, batch_id)

    return StreamingResponse(stream(), media_type="text/event-stream")
