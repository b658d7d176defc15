"""The embedded broker (kombu's SQLAlchemy transport over SQLite) under many channels."""

from __future__ import annotations

import time
from pathlib import Path
from queue import Empty

import pytest
from sqlalchemy import text

from producer.queue import producer_app
from producer.settings import Settings


def test_the_sql_broker_serves_more_channels_than_a_default_connection_pool(
    tmp_path: Path,
) -> None:
    """kombu's SQL channel keeps its session's connection after a queue lookup, until its next
    commit, and every channel of a process shares one engine: with SQLAlchemy's default pool
    (5 + 10) the 16th channel waited 30 s and a worker's consumer died of the TimeoutError."""
    settings = Settings.model_validate({"home": str(tmp_path)})
    app = producer_app(settings)
    with app.connection_for_write() as connection:
        channels = [connection.channel() for _ in range(20)]
        try:
            for channel in channels:
                channel._new_queue("imggen.expand")  # a lookup: the session stays checked out
            channels[-1]._put("imggen.expand", {"body": "x"})
            assert channels[0]._size("imggen.expand") == 1
        finally:
            for channel in channels:
                channel.close()


def test_an_idle_poll_reads_once_and_waits_for_no_writer(tmp_path: Path) -> None:
    """kombu polls each queue under SQLite's write lock (an idle worker took a fifth of a core,
    and waited on every producer's write): a poll first asks, without a lock, whether any of the
    channel's queues holds a message."""
    settings = Settings.model_validate({"home": str(tmp_path)})
    app = producer_app(settings)
    queues = ["imggen.expand", "imggen.encode"]
    with app.connection_for_write() as connection:
        channel = connection.channel()
        writer = connection.channel()
        try:
            for queue in queues:
                channel._new_queue(queue)
            channel._active_queues[:] = queues
            assert not channel._any_waiting(queues)
            # A producer in the middle of a write transaction: an idle poll does not wait for it.
            writer.session.execute(text("BEGIN IMMEDIATE TRANSACTION"))
            started = time.monotonic()
            with pytest.raises(Empty):
                channel._poll(channel.cycle, lambda message, queue: None)
            assert time.monotonic() - started < 1.0
            writer.session.rollback()

            writer._put("imggen.encode", {"body": "x"})
            assert channel._any_waiting(queues)
            delivered: list[str] = []
            channel._poll(channel.cycle, lambda message, queue: delivered.append(queue))
            assert delivered == ["imggen.encode"]
            assert not channel._any_waiting(queues)  # taken: no longer visible
        finally:
            channel.close()
            writer.close()
