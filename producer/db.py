"""Engines and sessions. Engines are built on first use and cached per URL, per process."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")


def dispose_engines_after_fork() -> None:
    """In a forked child: drop the parent's pooled connections without closing them.

    Two processes must never share a connection's socket; the parent keeps using its own.
    Runs in every forked child at once (os.register_at_fork), before any of its code can reach
    the database; the check on checkout below catches a connection that slips through anyway.
    """
    for engine in _engines.values():
        engine.dispose(close=False)


_engines: dict[str, Engine] = {}
os.register_at_fork(after_in_child=dispose_engines_after_fork)


def _remember_process(_dbapi_connection: Any, record: Any) -> None:
    record.info["pid"] = os.getpid()


def _refuse_other_process(_dbapi_connection: Any, record: Any, proxy: Any) -> None:
    # SQLAlchemy's recipe for pools and os.fork(): a connection made by another process is
    # dropped (never closed: its socket is the parent's), and the pool makes a fresh one.
    if record.info.get("pid") != os.getpid():
        record.dbapi_connection = proxy.dbapi_connection = None
        raise DisconnectionError("connection made by another process; reconnecting")


def get_engine(url: str) -> Engine:
    """A pooled engine for ``url``, made once per process."""
    if url not in _engines:
        _engines[url] = _make_engine(url)
    return _engines[url]


def forget_engine(url: str) -> None:
    """Close the engine for ``url`` and its connections (before its database is dropped)."""
    engine = _engines.pop(url, None)
    _sessionmaker.cache_clear()
    if engine is not None:
        engine.dispose()


def _make_engine(url: str) -> Engine:
    """A pooled engine for ``url``; SQLite files get WAL and write-serialising transactions."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # No pool_pre_ping: it costs a round trip on every transaction (a stage has three).
        # A connection killed under us (restart, pg_terminate_backend) fails its statement,
        # SQLAlchemy then recycles the whole pool, and ``in_transaction`` runs the work again.
        engine = create_engine(url)
        event.listen(engine, "connect", _remember_process)
        event.listen(engine, "checkout", _refuse_other_process)
        return engine
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})
    event.listen(engine, "connect", _remember_process)
    event.listen(engine, "checkout", _refuse_other_process)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control from the sqlite3 module so every transaction can start with
    # BEGIN IMMEDIATE: several processes write this file, and a deferred transaction that
    # upgrades from read to write fails at once with "database is locked" instead of waiting.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


@lru_cache(maxsize=8)
def _sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    with _sessionmaker(url).begin() as session:
        yield session


def in_transaction(url: str, work: Callable[[Session], T], retries: int = 3) -> T:
    """Run ``work`` in a transaction; run it again if the connection dropped under it.

    A database restart or a killed backend (``pg_terminate_backend``) then costs a retry, not a
    failed stage or request. ``work`` must be safe to repeat after a rollback.
    """
    for attempt in range(1, retries + 1):
        try:
            with session_scope(url) as session:
                return work(session)
        except DBAPIError as exc:
            if not exc.connection_invalidated or attempt == retries:
                raise
            log.warning("database connection lost, retrying (%d/%d)", attempt, retries)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")
