"""The OpenAI Images API over imggen's queue: ``POST /v1/images/generations``, ``POST
/v1/images/edits``, ``GET /v1/models``. Each request is an ordinary job of the caller's key; the
request waits for it (woken by job events) and answers with its images."""

from __future__ import annotations

import base64
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from producer.api.deps import ApiClient, ApiSettings, Bearer, key_for
from producer.api.image_links import signed_url
from producer.api.openai_images.translate import (
    ImageRequest,
    OpenAIError,
    invalid,
    job_fields,
    parse_json_body,
    parse_request,
    refuse_unsupported,
)
from producer.api.submission import (
    ClientGone,
    StillRunning,
    kept_images,
    submit_for_key,
    wait_for_end,
)
from producer.artifacts import ArtifactStore
from producer.catalog import ServedModel, find_model, served_models
from producer.client import Client
from producer.errors import InvalidJobSpec
from producer.models import ApiKey
from producer.quotas import QuotaExceeded
from producer.spec import SCHEDULERS

router = APIRouter(tags=["openai"])
# Each retry of the OpenAI client would submit another job: the answer says whether to retry.
_NO_RETRY = {"x-should-retry": "false"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid request (OpenAI error shape); nothing was written."},
    401: {"description": "No valid API key."},
    404: {"description": "No such model."},
    429: {"description": "Over quota; Retry-After says when to try again."},
    504: {"description": "The job did not end in time; it goes on, and the error names it."},
}
_IMAGE_REQUEST = {"type": "object", **ImageRequest.model_json_schema()}


def error_response(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, OpenAIError)
    return JSONResponse({"error": exc.body}, status_code=exc.status, headers=exc.headers)


async def _caller(request: Request, credentials: Bearer) -> ApiKey:
    secret = credentials.credentials if credentials else None
    key = await run_in_threadpool(key_for, request, secret)
    if key is None:
        raise OpenAIError(
            401,
            "Incorrect API key provided. Make one with `imggen keys create`.",
            code="invalid_api_key",
        )
    return key


Caller = Annotated[ApiKey, Depends(_caller)]


def _model(settings: Any, name: str | None) -> ServedModel:
    model = find_model(settings, name)
    if model is None:
        raise OpenAIError(
            404,
            f"The model '{name}' does not exist. GET /v1/models lists the models served here.",
            param="model",
            code="model_not_found",
        )
    return model


@router.post(
    "/v1/images/generations",
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _IMAGE_REQUEST}},
        }
    },
)
async def create_image(request: Request, key: Caller, client: ApiClient) -> Any:
    """Create images from a prompt (OpenAI's `images.generate`)."""
    data = parse_json_body(await request.body())
    parsed = parse_request(data)
    fields, response_format = job_fields(parsed, _model(client.settings, parsed.model))
    return await _run(request, client, key, fields, None, response_format)


@router.post(
    "/v1/images/edits",
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["image", "prompt"],
                        "properties": {
                            "image": {"type": "string", "format": "binary"},
                            **_IMAGE_REQUEST["properties"],
                        },
                    }
                }
            },
        }
    },
)
async def edit_image(request: Request, key: Caller, client: ApiClient) -> Any:
    """Image-to-image from one input image and a prompt (OpenAI's `images.edit`)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        message = "Expected a multipart/form-data body with 'image' and 'prompt'."
        raise OpenAIError(400, message, param="image")
    try:
        form = await request.form()
    except (MultiPartException, HTTPException) as exc:
        raise OpenAIError(400, f"Could not parse the multipart body: {exc}") from None
    files: dict[str, list[UploadFile]] = {}
    data: dict[str, Any] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.setdefault(name, []).append(value)
        else:
            data[name] = value
    refuse_unsupported({name: "a file" for name in files if name in ("mask", "markup")})
    unknown = set(files) - {"image", "image[]"}
    if unknown:
        field = sorted(unknown)[0]
        raise OpenAIError(
            400,
            f"Unrecognized request argument supplied: {field}",
            param=field,
            code="unknown_parameter",
        )
    images = files.get("image", []) + files.get("image[]", [])
    if len(images) != 1:
        message = (
            "Missing required parameter: 'image'."
            if not images
            else ("imggen edits one image a request; send a single 'image'.")
        )
        raise OpenAIError(400, message, param="image", code="invalid_value")
    parsed = parse_request(data)
    fields, response_format = job_fields(parsed, _model(client.settings, parsed.model))
    return await _run(request, client, key, fields, await images[0].read(), response_format)


async def _run(
    request: Request,
    client: Client,
    key: ApiKey,
    fields: dict[str, Any],
    image: bytes | None,
    response_format: str,
) -> Any:
    settings = client.settings
    try:
        handle = await run_in_threadpool(submit_for_key, client, key, fields, image)
    except QuotaExceeded as exc:
        raise OpenAIError(
            429,
            f"Rate limit reached: {exc.reason}.",
            type="requests",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(exc.retry_after_s)},
        ) from None
    except InvalidJobSpec as exc:
        raise invalid(exc.errors) from None
    try:
        view = await wait_for_end(request, client, key, handle.id, settings.api_wait_seconds)
    except StillRunning as exc:
        raise OpenAIError(
            504, str(exc), type="server_error", code="timeout", headers=_NO_RETRY, job_id=handle.id
        ) from None
    except ClientGone:
        return Response(status_code=499)  # nobody reads it
    if view["status"] == "canceled":
        raise OpenAIError(
            409,
            f"job {handle.id} was canceled",
            code="job_canceled",
            headers=_NO_RETRY,
            job_id=handle.id,
        )
    if view["status"] != "succeeded":
        raise OpenAIError(
            500,
            f"job {handle.id} failed: {view['error'] or 'no reason recorded'}",
            type="server_error",
            headers=_NO_RETRY,
            job_id=handle.id,
        )
    store = ArtifactStore(settings.resolved_artifacts_url)
    revised = view["expanded_prompt"] if view["expanded_prompt"] != view["prompt"] else None
    data = []
    for image_row in kept_images(view):
        item: dict[str, Any] = {"revised_prompt": revised}
        if response_format == "b64_json":
            png = await run_in_threadpool(store.get, image_row["uri"])
            item["b64_json"] = base64.b64encode(png).decode()
        else:
            ttl = settings.image_url_ttl_seconds
            item["url"] = signed_url(request, key, handle.id, image_row["index"], ttl)
        # imggen's own fields, beside OpenAI's.
        item |= {"seed": image_row["seed"], "metrics": image_row["metrics"]}
        data.append(item)
    spec = view["spec"]
    return {
        "created": int(time.time()),
        "data": data,
        "background": "opaque",
        "output_format": "png",
        "size": f"{spec['width']}x{spec['height']}",
        "job_id": handle.id,
    }


def _model_object(model: ServedModel) -> dict[str, Any]:
    size = model.native_size
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": "imggen",
        # imggen's own fields.
        "family": model.family,
        "pipeline": model.pipeline,
        "native_size": f"{size[0]}x{size[1]}" if size else None,
        "default": model.default,
        # Registered: what its family steps (none: only its own scheduler); else the list.
        "samplers": list(model.samplers if model.family else SCHEDULERS),
        "adapters": list(model.adapters),
        "workers": list(model.workers),
        "refused": model.refused,
    }


@router.get("/v1/models", responses={401: _ERRORS[401]})
async def list_models(key: Caller, settings: ApiSettings) -> Any:
    """The models served here, in the OpenAI list shape with imggen's fields added."""
    models = await run_in_threadpool(served_models, settings)
    return {"object": "list", "data": [_model_object(model) for model in models]}


@router.get("/v1/models/{model_id:path}", responses={401: _ERRORS[401], 404: _ERRORS[404]})
async def retrieve_model(model_id: str, key: Caller, settings: ApiSettings) -> Any:
    """One served model (OpenAI's `models.retrieve`)."""
    return _model_object(await run_in_threadpool(_model, settings, model_id))
