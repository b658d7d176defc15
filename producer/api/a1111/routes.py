"""The AUTOMATIC1111 web UI API (``/sdapi/v1/...``) over imggen's queue. ``txt2img`` and ``img2img``
are ordinary jobs of the caller's key, waited for (woken by job events); ``progress`` and
``interrupt`` act on the caller's current job."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from producer.api.a1111.translate import (
    SAMPLERS,
    SCHEDULERS,
    A1111Error,
    Img2ImgRequest,
    Txt2ImgRequest,
    invalid,
    job_fields,
    parse_request,
)
from producer.api.deps import ApiClient, ApiSettings, Basic, Bearer, key_for
from producer.api.submission import (
    ClientGone,
    StillRunning,
    kept_images,
    submit_for_key,
    wait_for_end,
)
from producer.artifacts import ArtifactStore
from producer.catalog import served_models
from producer.client import Client
from producer.db import in_transaction
from producer.errors import InvalidJobSpec
from producer.events import notify
from producer.jobs import cancel_job, current_job
from producer.models import ApiKey, Job
from producer.quotas import QuotaExceeded
from producer.spec import JobSpec

router = APIRouter(prefix="/sdapi/v1", tags=["automatic1111"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid API key (HTTP Basic with the key as password, or Bearer)."},
    404: {"description": "No such sampler."},
    422: {"description": "A field is invalid or asks for what imggen does not do."},
    429: {"description": "Over quota; Retry-After says when to try again."},
    504: {"description": "The job did not end in time; it goes on, and the error names it."},
}


def error_response(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, A1111Error)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _caller(request: Request, basic: Basic, bearer: Bearer) -> ApiKey:
    secret = basic.password if basic else bearer.credentials if bearer else None
    key = await run_in_threadpool(key_for, request, secret)
    if key is None:
        raise A1111Error(
            401, "Incorrect username or password", headers={"WWW-Authenticate": "Basic"}
        )
    return key


Caller = Annotated[ApiKey, Depends(_caller)]


def _body(model: type[Txt2ImgRequest]) -> dict[str, Any]:
    schema = {"type": "object", **model.model_json_schema()}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def _json(request: Request) -> Any:
    try:
        return json.loads((await request.body()).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        detail = [{"loc": ["body"], "msg": "not valid JSON", "type": "json_invalid"}]
        raise A1111Error(422, detail) from None


@router.post("/txt2img", responses=_ERRORS, openapi_extra=_body(Txt2ImgRequest))
async def txt2img(request: Request, key: Caller, client: ApiClient) -> Any:
    """Text to image; answers with base64 PNGs and, in `info`, the job id and metrics."""
    parsed = parse_request(await _json(request), Txt2ImgRequest)
    return await _run(request, client, key, parsed)


@router.post("/img2img", responses=_ERRORS, openapi_extra=_body(Img2ImgRequest))
async def img2img(request: Request, key: Caller, client: ApiClient) -> Any:
    """Image to image from `init_images[0]` (base64) at `denoising_strength`."""
    parsed = parse_request(await _json(request), Img2ImgRequest)
    return await _run(request, client, key, parsed)


async def _run(request: Request, client: Client, key: ApiKey, parsed: Txt2ImgRequest) -> Any:
    fields, image = job_fields(parsed)
    try:
        handle = await run_in_threadpool(submit_for_key, client, key, fields, image)
    except QuotaExceeded as exc:
        raise A1111Error(429, exc.reason, headers={"Retry-After": str(exc.retry_after_s)}) from None
    except InvalidJobSpec as exc:
        raise invalid(exc.errors) from None
    try:
        view = await wait_for_end(request, client, key, handle.id, client.settings.api_wait_seconds)
    except StillRunning as exc:
        raise A1111Error(504, str(exc), job_id=handle.id) from None
    except ClientGone:
        return Response(status_code=499)  # nobody reads it
    if view["status"] == "failed":
        raise A1111Error(500, f"job {handle.id} failed: {view['error']}", job_id=handle.id)
    store = ArtifactStore(client.settings.resolved_artifacts_url)
    images = kept_images(view)
    encoded = []
    if parsed.send_images:
        for row in images:
            png = await run_in_threadpool(store.get, row["uri"])
            encoded.append(base64.b64encode(png).decode())
    return {
        "images": encoded,
        "parameters": parsed.model_dump(exclude={"init_images"}),
        "info": json.dumps(_info(view, parsed, images)),
    }


def _info(view: dict[str, Any], parsed: Txt2ImgRequest, images: list[dict[str, Any]]) -> dict:
    """A1111's generation info, with imggen's job id, expanded prompt and metrics added."""
    spec = JobSpec.model_validate(view["spec"])
    sampler = next((t for t, (ours, _) in SAMPLERS.items() if ours == spec.scheduler), None)
    seeds = [row["seed"] for row in images]
    line = (
        f"Steps: {spec.steps}, Sampler: {sampler or 'model default'}, "
        f"CFG scale: {spec.guidance:g}, Size: {spec.width}x{spec.height}, Model: {view['model']}"
    )
    negative = f"\nNegative prompt: {spec.negative_prompt}" if spec.negative_prompt else ""
    return {
        "prompt": spec.prompt,
        "all_prompts": [spec.prompt] * len(images),
        "negative_prompt": spec.negative_prompt,
        "all_negative_prompts": [spec.negative_prompt] * len(images),
        "seed": spec.seed,
        "all_seeds": seeds,
        "subseed": -1,
        "all_subseeds": [-1] * len(images),
        "subseed_strength": 0,
        "width": spec.width,
        "height": spec.height,
        "sampler_name": sampler,
        "cfg_scale": spec.guidance,
        "steps": spec.steps,
        "batch_size": parsed.batch_size,
        "restore_faces": False,
        "sd_model_name": view["model"],
        "denoising_strength": spec.strength if spec.has_input_image else None,
        "styles": [],
        "index_of_first_image": 0,
        "infotexts": [f"{spec.prompt}{negative}\n{line}, Seed: {seed}" for seed in seeds],
        "job_timestamp": view["created_at"],
        "interrupted": view["status"] == "canceled",
        # imggen's own.
        "job_id": view["id"],
        "expanded_prompt": view["expanded_prompt"],
        "metrics": [row["metrics"] for row in images],
    }


def _current(client: Client, key: ApiKey) -> tuple[dict[str, Any] | None, int]:
    def read(session: Any) -> tuple[dict[str, Any] | None, int]:
        job, count = current_job(session, owner_key_id=key.id)
        return (_progress_of(job) if job else None), count

    return in_transaction(client.settings.resolved_database_url, read)


def _progress_of(job: Job) -> dict[str, Any]:
    step, total = job.progress_step or 0, job.progress_total or 0
    stages_after_denoise = job.stage in ("decode", "score")
    fraction = 1.0 if stages_after_denoise else (step / total if total else 0.0)
    started = job.started_at
    if started is not None and started.tzinfo is None:  # SQLite keeps no time zone
        started = started.replace(tzinfo=timezone.utc)
    elapsed = (datetime.now(timezone.utc) - started).total_seconds() if started else 0.0
    eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
    return {
        "id": job.id,
        "fraction": round(min(fraction, 1.0), 4),
        "eta": round(max(eta, 0.0), 2),
        "step": step,
        "total": total,
        "created_at": job.created_at.isoformat(),
    }


@router.get("/progress", responses={401: _ERRORS[401]})
async def progress(key: Caller, client: ApiClient) -> Any:
    """Progress and ETA of the caller's current job (its newest running, else queued, job)."""
    job, count = await run_in_threadpool(_current, client, key)
    return {
        "progress": job["fraction"] if job else 0.0,
        "eta_relative": job["eta"] if job else 0.0,
        "state": {
            "skipped": False,
            "interrupted": False,
            "stopping_generation": False,
            "job": job["id"] if job else "",
            "job_count": count,
            "job_timestamp": job["created_at"] if job else "0",
            "job_no": 0,
            "sampling_step": job["step"] if job else 0,
            "sampling_steps": job["total"] if job else 0,
        },
        "current_image": None,
        "textinfo": None,
        "job_id": job["id"] if job else None,
    }


@router.post("/interrupt", responses={401: _ERRORS[401]})
async def interrupt(key: Caller, client: ApiClient, settings: ApiSettings) -> Any:
    """Cancel the caller's current job (the one `progress` reports); it stops at its next step."""
    job, _ = await run_in_threadpool(_current, client, key)
    if job is None:
        return {"interrupted": []}
    db = settings.resolved_database_url
    await run_in_threadpool(in_transaction, db, lambda s: cancel_job(s, job["id"]))
    notify(settings.resolved_redis_url, job["id"])
    return {"interrupted": [job["id"]]}


@router.get("/sd-models", responses={401: _ERRORS[401]})
async def sd_models(key: Caller, settings: ApiSettings) -> Any:
    """The models served here; pass one as `override_settings.sd_model_checkpoint`."""
    models = await run_in_threadpool(served_models, settings)
    return [
        {
            "title": model.id,
            "model_name": model.id,
            "hash": None,
            "sha256": None,
            "filename": model.id,
            "config": None,
        }
        for model in models
    ]


@router.get("/loras", responses={401: _ERRORS[401]})
async def loras(key: Caller, settings: ApiSettings) -> Any:
    """The LoRA adapters workers registered; name one in a prompt as `<lora:NAME:WEIGHT>`."""
    models = await run_in_threadpool(served_models, settings)
    names = sorted({name for model in models for name in model.adapters})
    return [
        {"name": name, "alias": name, "path": f"loras/{name}.safetensors", "metadata": {}}
        for name in names
    ]


@router.get("/samplers", responses={401: _ERRORS[401]})
async def samplers(key: Caller) -> Any:
    return [
        {"name": title, "aliases": aliases, "options": {}}
        for title, (_, aliases) in SAMPLERS.items()
    ]


@router.get("/schedulers", responses={401: _ERRORS[401]})
async def schedulers(key: Caller) -> Any:
    return [
        {
            "name": name,
            "label": label,
            "aliases": None,
            "default_rho": -1,
            "need_inner_model": False,
        }
        for name, label in SCHEDULERS.items()
    ]


@router.get("/options", responses={401: _ERRORS[401]})
async def options(key: Caller, settings: ApiSettings) -> Any:
    """The deployment's settings that A1111 clients read (read-only: they are the deployment's,
    not one caller's; pass `override_settings` per request instead)."""
    return {
        "sd_model_checkpoint": settings.default_model,
        "samples_format": "png",
        "eta_ddim": 0.0,
        "eta_ancestral": 1.0,
        "CLIP_stop_at_last_layers": 1,
    }


@router.get("/scripts", responses={401: _ERRORS[401]})
async def scripts(key: Caller) -> Any:
    """No A1111 scripts or extensions run here (clients probe this at start)."""
    return {"txt2img": [], "img2img": []}
