"""The embedded broker: kombu's SQLAlchemy transport, with one option it mishandles fixed.

kombu hands every transport option to ``create_engine()``, so ``polling_interval`` (read by
kombu's own Transport) raises a TypeError there, and the SQL broker is stuck polling once a
second: a job's five stage hand-offs then cost seconds. This subclass keeps that option out of
the engine. It is registered under the ``sqla`` and ``sqlalchemy`` URL schemes by
``producer.queue.configure``.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as kombu_sqla
from sqlalchemy import create_engine

_NOT_FOR_THE_ENGINE = ("polling_interval",)


class Channel(kombu_sqla.Channel):
    def _engine_from_config(self) -> Any:
        conninfo = self.connection.client
        options = dict(conninfo.transport_options)
        for key in (
            *_NOT_FOR_THE_ENGINE,
            "queue_tablename",
            "message_tablename",
            "callback",
            "errback",
            "max_retries",
            "interval_start",
            "interval_step",
            "interval_max",
            "retry_errors",
        ):
            options.pop(key, None)
        return create_engine(conninfo.hostname, **options)


class Transport(kombu_sqla.Transport):
    Channel = Channel


def register() -> None:
    for scheme in ("sqla", "sqlalchemy"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
