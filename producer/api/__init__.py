"""The HTTP API for web backends (FastAPI): ``imggen api`` serves ``create_app()``."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import text

from producer.api import jobs
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

    @app.get("/healthz", response_model=Health, tags=["health"])
    def health() -> Health:
        """Liveness: the database answers. Needs no API key."""
        in_transaction(settings.resolved_database_url, lambda s: s.execute(text("SELECT 1")))
        return Health(status="ok")

    return app
