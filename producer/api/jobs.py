"""The /v1/jobs resource: submit, list, read, cancel, images, and a stream of events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import UploadFile

from producer.api.deps import ApiClient, ApiSettings, CurrentKey
from producer.api.paging import Cursor, Limit, StatusFilter, decode_cursor, encode_cursor
from producer.api.schemas import FieldErrors, JobList, JobView, Refusal
from producer.api.submission import TERMINAL_VALUES, owned_view, submit_for_key
from producer.artifacts import ArtifactStore
from producer.client import Client
from producer.db import in_transaction
from producer.errors import InvalidJobSpec
from producer.events import changes, notify
from producer.jobs import job_view, list_jobs
from producer.quotas import QuotaExceeded
from producer.spec import JobSpec
from producer.views import public_view

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _inlined(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with each ``{"$ref": "#/$defs/X"}`` replaced by X's schema: the request body is
    spelled out in the operation, where pydantic's ``$defs`` do not reach."""
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inlined(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inlined(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inlined(item, defs) for item in node]
    return node


_SPEC_SCHEMA = JobSpec.model_json_schema()
_REQUEST_FIELDS = {
    k: _inlined(v, _SPEC_SCHEMA.get("$defs", {}))
    for k, v in _SPEC_SCHEMA["properties"].items()
    if k != "has_input_image"
}
# Left out, the size is the model's own (GET /v1/models), not JobSpec's fallback of 512.
for _side in ("width", "height"):
    _REQUEST_FIELDS[_side] = {k: v for k, v in _REQUEST_FIELDS[_side].items() if k != "default"}
    _REQUEST_FIELDS[_side]["description"] = "Default: the model's native size."
_JOB_REQUEST = {"type": "object", "properties": _REQUEST_FIELDS, "additionalProperties": False}

SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _JOB_REQUEST},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "spec": {
                            "type": "string",
                            "description": "The job, as JSON (see application/json).",
                        },
                        "image": {
                            "type": "string",
                            "format": "binary",
                            "description": "PNG, JPEG or WebP.",
                        },
                    },
                }
            },
        },
    }
}


def _unprocessable(errors: dict[str, str]) -> HTTPException:
    """422 naming each bad field, in FastAPI's own error shape."""
    detail = [
        {"loc": ["body", field], "msg": reason, "type": "value_error"}
        for field, reason in errors.items()
    ]
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail)


def _view(request: Request, job: dict[str, Any]) -> dict[str, Any]:
    job = public_view(job)
    base = str(request.url_for("get_job", job_id=job["id"]))
    for image in job["images"]:
        image["url"] = f"{base}/images/{image['index']}"
    job["urls"] = {
        "self": base,
        "events": f"{base}/events",
        "images": [i["url"] for i in job["images"]],
    }
    return job


def _owned(client: ApiClient, key: CurrentKey, job_id: str) -> dict[str, Any]:
    """The job if it exists and belongs to ``key``; 404 otherwise, even for others' jobs."""
    view = owned_view(client, key, job_id)
    if view is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job with id {job_id!r}")
    return view


async def _read_submission(request: Request) -> tuple[dict[str, Any], bytes | None]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        raw, upload = form.get("spec"), form.get("image")
        if not isinstance(raw, str):
            raise _unprocessable(
                {"spec": "a multipart request needs a 'spec' field with the job as JSON"}
            )
        image = await upload.read() if isinstance(upload, UploadFile) else None
    else:
        try:
            raw, image = (await request.body()).decode("utf-8"), None
        except UnicodeDecodeError:
            raise _unprocessable({"body": "not valid UTF-8"}) from None
    try:
        fields = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _unprocessable({"body": f"not valid JSON: {exc.msg}"}) from None
    except RecursionError:
        raise _unprocessable({"body": "JSON nested too deeply"}) from None
    if not isinstance(fields, dict):
        raise _unprocessable({"body": "must be a JSON object"})
    return fields, image


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobView,
    openapi_extra=SUBMIT_BODY,
    responses={
        422: {"model": FieldErrors, "description": "A field is invalid; nothing was written."},
        429: {"model": Refusal, "description": "Over quota; Retry-After says when to retry."},
    },
)
async def submit_job(
    request: Request,
    key: CurrentKey,
    client: ApiClient,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Any:
    """Submit a job (JSON; multipart with an `image` for image-to-image). Returns at once."""
    fields, image = await _read_submission(request)
    if "has_input_image" in fields:
        raise _unprocessable({"has_input_image": "set by the server from the uploaded image"})
    try:
        handle = await run_in_threadpool(
            submit_for_key, client, key, fields, image, idempotency_key
        )
    except QuotaExceeded as exc:
        return JSONResponse(
            {"detail": exc.reason},
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    except InvalidJobSpec as exc:
        raise _unprocessable(exc.errors) from None
    view = _view(request, await run_in_threadpool(_owned, client, key, handle.id))
    headers = {"Location": view["urls"]["self"]}
    if handle.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(view, status_code=status.HTTP_202_ACCEPTED, headers=headers)


@router.get("", response_model=JobList)
async def list_my_jobs(
    request: Request,
    key: CurrentKey,
    client: ApiClient,
    job_status: StatusFilter = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Any:
    """The caller's jobs, newest first; pass `next_cursor` back as `cursor` for the next page."""
    status_value = job_status.value if job_status else None
    return await page_of_jobs(
        request, client, cursor, limit=limit, owner_key_id=key.id, status=status_value
    )


async def page_of_jobs(
    request: Request, client: Client, cursor: str | None, **filters: Any
) -> dict[str, Any]:
    """A page of jobs as ``list_jobs(**filters)`` finds them, with the next page's cursor."""
    after = decode_cursor(cursor) if cursor else None

    def read(session: Any) -> tuple[list[dict[str, Any]], str | None]:
        jobs, following = list_jobs(session, cursor=after, **filters)
        token = encode_cursor(following) if following is not None else None
        return [job_view(job) for job in jobs], token

    views, token = await run_in_threadpool(
        in_transaction, client.settings.resolved_database_url, read
    )
    return {"jobs": [_view(request, view) for view in views], "next_cursor": token}


@router.get(
    "/{job_id}",
    name="get_job",
    response_model=JobView,
    responses={404: {"model": Refusal, "description": "No such job."}},
)
async def get_job_route(request: Request, job_id: str, key: CurrentKey, client: ApiClient) -> Any:
    """One job: status, stage, progress, stages, images with their metrics."""
    return _view(request, await run_in_threadpool(_owned, client, key, job_id))


@router.delete(
    "/{job_id}",
    response_model=JobView,
    responses={404: {"model": Refusal, "description": "No such job."}},
)
async def cancel_job(
    request: Request, job_id: str, key: CurrentKey, client: ApiClient, settings: ApiSettings
) -> Any:
    """Cancel: a queued job never starts; a running one stops at its next denoising step."""
    await run_in_threadpool(_owned, client, key, job_id)
    await run_in_threadpool(client.cancel, job_id)
    notify(settings.resolved_redis_url, job_id)
    return _view(request, await run_in_threadpool(_owned, client, key, job_id))


@router.get(
    "/{job_id}/images/{index}",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
        404: {"model": Refusal, "description": "No such job or image."},
    },
)
async def get_image(job_id: str, index: int, key: CurrentKey, client: ApiClient) -> Response:
    """The PNG of image `index` of a job."""
    view = await run_in_threadpool(_owned, client, key, job_id)
    image = next((i for i in view["images"] if i["index"] == index), None)
    if image is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job_id} has no image {index}")
    store = ArtifactStore(client.settings.resolved_artifacts_url)
    return Response(await run_in_threadpool(store.get, image["uri"]), media_type="image/png")


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 404: {"description": "No such job."}},
)
async def job_events(
    request: Request, job_id: str, key: CurrentKey, client: ApiClient, settings: ApiSettings
) -> StreamingResponse:
    """Server-Sent Events: `state` on each stage or status change and as its place in a queue
    moves (`queue`: position and ETA), `progress` for denoising steps (step k of n), and `end`
    with the whole job once it is terminal. A client that reconnects first gets the current
    state."""
    await run_in_threadpool(_owned, client, key, job_id)

    async def stream() -> AsyncIterator[str]:
        last: tuple[Any, ...] | None = None
        async for _ in changes(settings.resolved_redis_url, job_id):
            if await request.is_disconnected():
                return
            view = _view(request, await run_in_threadpool(_owned, client, key, job_id))
            place = view["queue"]
            state = (view["status"], view["stage"], place["position"] if place else None)
            progress = view["progress"]
            if view["status"] in TERMINAL_VALUES:
                yield f"event: end\ndata: {json.dumps(view)}\n\n"
                return
            if last is None or state != last[:3]:
                data = {
                    "id": job_id,
                    "status": view["status"],
                    "stage": view["stage"],
                    "progress": progress,
                    "queue": place,
                }
                yield f"event: state\ndata: {json.dumps(data)}\n\n"
            elif progress["step"] != last[3]:
                data = {"id": job_id, "stage": view["stage"], **progress}
                yield f"event: progress\ndata: {json.dumps(data)}\n\n"
            last = (*state, progress["step"])

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
