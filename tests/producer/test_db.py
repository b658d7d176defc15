"""Transactions survive a connection killed under them (no pre-ping: the retry does it)."""

from __future__ import annotations

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from producer.db import in_transaction
from testbed.services import POSTGRES_ADMIN_URL


def test_a_transaction_on_a_killed_connection_runs_again_on_a_fresh_one(postgres_url: str) -> None:
    def backend(session: Session) -> int:
        calls.append(1)
        return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())

    calls: list[int] = []
    first = in_transaction(postgres_url, backend)  # leaves its connection in the pool
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    finally:
        admin.dispose()

    calls.clear()
    second = in_transaction(postgres_url, backend)
    # The pooled connection was dead: the first try failed on it, the second ran on a new one.
    assert second != first and len(calls) == 2
    calls.clear()
    assert in_transaction(postgres_url, backend) == second and len(calls) == 1
