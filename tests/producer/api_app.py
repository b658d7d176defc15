"""The HTTP API in-process for tests: FastAPI's test client over the real app and a real SQLite
database, with a key to call it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from migrations import upgrade
from producer.api import create_app
from producer.db import session_scope
from producer.keys import create_key
from producer.models import Job
from producer.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SMALL: dict[str, Any] = {"prompt": "a red fox", "n": 1, "steps": 4, "width": 64, "height": 64}


class Api:
    def __init__(self, home: Path, **settings: Any) -> None:
        self.settings = Settings(home=home, **settings)
        upgrade(self.settings.resolved_database_url)
        self.http = TestClient(create_app(self.settings))
        self.key = self.new_key("tests")

    def new_key(self, name: str) -> dict[str, str]:
        with session_scope(self.settings.resolved_database_url) as session:
            _, key = create_key(session, name)
        return {"Authorization": f"Bearer {key}"}

    def jobs_in_db(self) -> int:
        with session_scope(self.settings.resolved_database_url) as session:
            return int(session.scalar(select(func.count()).select_from(Job)) or 0)

    def submit(self, body: dict[str, Any] | None = None, **headers: str) -> Any:
        return self.http.post("/v1/jobs", json=body or SMALL, headers=self.key | headers)
