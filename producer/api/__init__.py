"""The HTTP API for web backends (FastAPI): ``imggen api`` serves ``create_app()``."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import text

from producer.api import image_links, jobs
from producer.api.a1111 import routes as a1111
from producer.api.a1111.translate import A1111Error
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
    app.include_router(openai_images.router)
    app.include_router(image_links.router)
    app.include_router(a1111.router)
    app.add_exception_handler(OpenAIError, openai_images.error_response)
    app.add_exception_handler(A1111Error, a1111.error_response)

    @app.get("/healthz", response_model=Health, tags=["health"])
    def health() -> Health:
        """Liveness: the database answers. Needs no API key."""
        in_transaction(settings.resolved_database_url, lambda s: s.execute(text("SELECT 1")))
        return Health(status="ok")

    return app
