"""The operator's API (admin keys only): every key's jobs, their counts, the workers, one
snapshot of the deployment and a live stream of it; the dashboard page that shows them; and
``/metrics`` for Prometheus."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import select
from sqlalchemy.orm import Session

from producer import overview
from producer.api.deps import AdminKey, ApiClient, ApiSettings
from producer.api.jobs import page_of_jobs
from producer.api.paging import Cursor, Limit, StatusFilter
from producer.api.schemas import JobList
from producer.artifacts import ArtifactStore
from producer.db import in_transaction
from producer.events import deployment_changes
from producer.jobs import is_job_id
from producer.metrics import DeploymentCollector, exposition
from producer.models import Image
from producer.spec import MAX_IMAGES

router = APIRouter(prefix="/v1/admin", tags=["admin"])
pages = APIRouter(include_in_schema=False)
Lane = Annotated[str | None, Query(pattern="^(interactive|bulk)$")]


def _read(client: ApiClient, work: Any) -> Any:
    return run_in_threadpool(in_transaction, client.settings.resolved_database_url, work)


@router.get("/overview")
async def get_overview(_: AdminKey, client: ApiClient) -> Any:
    """The deployment now: queue depth per stage and lane, jobs by status and lane, running jobs
    and their step, recent images with their metrics, batches with progress and ETA, workers,
    the commonest failure reasons of the last day."""
    return await _read(client, overview.snapshot)


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def overview_events(
    request: Request, _: AdminKey, client: ApiClient, settings: ApiSettings
) -> StreamingResponse:
    """Server-Sent Events: a `snapshot` (the overview) whenever a job changes, at most twice a
    second and at least every few seconds."""

    async def stream() -> AsyncIterator[str]:
        async for _ in deployment_changes(settings.resolved_redis_url):
            if await request.is_disconnected():
                return
            snapshot = await _read(client, overview.snapshot)
            yield f"event: snapshot\ndata: {json.dumps(snapshot)}\n\n"

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@router.get("/jobs", response_model=JobList)
async def list_all_jobs(
    request: Request,
    _: AdminKey,
    client: ApiClient,
    job_status: StatusFilter = None,
    lane: Lane = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Any:
    """Every key's jobs, newest first, by status and lane if asked; `next_cursor` pages on."""
    return await page_of_jobs(
        request,
        client,
        cursor,
        limit=limit,
        owner_key_id=None,
        every_owner=True,
        status=job_status.value if job_status else None,
        lane=lane,
    )


@router.get("/jobs/count")
async def count_jobs(_: AdminKey, client: ApiClient) -> Any:
    """Every key's jobs counted by status and lane, and the stage runs waiting by stage and lane."""

    def read(session: Session) -> dict[str, Any]:
        return {"jobs": overview.job_counts(session), "queue_depth": overview.queue_depth(session)}

    return await _read(client, read)


@router.get("/workers")
async def list_workers(_: AdminKey, client: ApiClient) -> Any:
    """Worker processes heard from in the last hour: alive or not, queues, resident models,
    current job and stage (as of their last heartbeat, a few seconds ago)."""
    return {"workers": await _read(client, overview.workers)}


@router.get(
    "/jobs/{job_id}/images/{index}",
    response_class=Response,
    responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def get_any_image(
    job_id: str, index: Annotated[int, Path(ge=0, lt=MAX_IMAGES)], _: AdminKey, client: ApiClient
) -> Response:
    """The PNG of image `index` of any key's job (the dashboard's thumbnails)."""
    if not is_job_id(job_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job with id {job_id!r}")

    def read(session: Session) -> str | None:
        query = select(Image.uri).where(Image.job_id == job_id, Image.index == index)
        return session.scalar(query)

    uri = await _read(client, read)
    if uri is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job_id} has no image {index}")
    store = ArtifactStore(client.settings.resolved_artifacts_url)
    return Response(await run_in_threadpool(store.get, uri), media_type="image/png")


@pages.get("/dashboard", response_class=HTMLResponse)
def dashboard() -> HTMLResponse:
    """The live dashboard: one page, no build step, nothing fetched from elsewhere. It asks for
    an admin key and reads the admin API with it."""
    page = files("producer.api").joinpath("dashboard.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})


@pages.get("/metrics")
async def metrics(settings: ApiSettings) -> Response:
    """Prometheus' scrape: this API's counters (every process's in multiprocess mode) and the
    deployment's gauges read from SQL."""
    collector = DeploymentCollector(settings.resolved_database_url)
    body = await run_in_threadpool(exposition, collector)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
