"""The HTTP API for web backends (FastAPI): ``imggen api`` serves ``create_app()``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from producer.api import admin, batches, image_links, jobs, webhook_secret
from producer.api.a1111 import routes as a1111
from producer.api.a1111.translate import A1111Error
from producer.api.guards import RETRY_AFTER_S, BodySizeLimit, database_unavailable
from producer.api.openai_images import routes as openai_images
from producer.api.openai_images.translate import OpenAIError
from producer.api.schemas import Health
from producer.client import Client
from producer.db import in_transaction
from producer.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="imggen",
        version="1",
        summary="Image generation as background jobs: submit, follow, cancel, fetch results.",
    )
    app.state.settings = settings
    app.state.client = Client(settings)
    app.include_router(jobs.router)
    app.include_router(batches.router)
    app.include_router(openai_images.router)
    app.include_router(image_links.router)
    app.include_router(webhook_secret.router)
    app.include_router(a1111.router)
    app.include_router(admin.router)
    app.include_router(admin.pages)
    app.add_exception_handler(OpenAIError, openai_images.error_response)
    app.add_exception_handler(A1111Error, a1111.error_response)
    app.add_exception_handler(DBAPIError, database_unavailable)
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)

    @app.get(
        "/healthz",
        response_model=Health,
        tags=["health"],
        responses={503: {"model": Health, "description": "A dependency is down; it is named."}},
    )
    def health() -> Any:
        """The database and, where configured, Redis answer. Needs no API key."""
        checks = {"database": _check(_ping_database, settings)}
        if settings.resolved_redis_url is not None:
            checks["redis"] = _check(_ping_redis, settings)
        healthy = all(state == "ok" for state in checks.values())
        body = Health(status="ok" if healthy else "unavailable", dependencies=checks)
        return JSONResponse(
            body.model_dump(),
            status_code=200 if healthy else 503,
            headers={} if healthy else {"Retry-After": str(RETRY_AFTER_S)},
        )

    return app


def _check(ping: Callable[[Settings], object], settings: Settings) -> str:
    try:
        ping(settings)
    except Exception as exc:  # noqa: BLE001 - any failure means "down", and says why
        return f"down: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return "ok"


def _ping_database(settings: Settings) -> object:
    return in_transaction(
        settings.resolved_database_url, lambda s: s.execute(text("SELECT 1")), retries=1
    )


def _ping_redis(settings: Settings) -> object:
    url = settings.resolved_redis_url
    assert url is not None
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping()
