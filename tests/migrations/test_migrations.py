"""Migrations: upgrade and downgrade on SQLite and PostgreSQL, and the models match them."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from migrations import downgrade, upgrade
from producer.db import get_engine
from producer.models import Base

TABLES = {"jobs", "stage_runs", "images", "metrics"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrate.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_upgrade_matches_models_and_downgrade_removes_everything(database_url: str) -> None:
    engine = get_engine(database_url)
    upgrade(database_url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []

    downgrade(database_url, "base")
    assert set(inspect(engine).get_table_names()) & TABLES == set()
    upgrade(database_url)  # and back up again: the downgrade left nothing behind in the way
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()
