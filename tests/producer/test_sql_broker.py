"""The embedded broker (kombu's SQLAlchemy transport over SQLite) under many channels."""

from __future__ import annotations

from pathlib import Path

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
