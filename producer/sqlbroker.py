"""The embedded broker: kombu's SQLAlchemy transport, with an option it mishandles fixed and its
idle polls made cheap.

kombu hands every transport option to ``create_engine()``, so ``polling_interval`` (read by
kombu's own Transport) raises a TypeError there, and the SQL broker is stuck polling once a
second: a job's five stage hand-offs then cost seconds. This subclass keeps that option out of
the engine.

kombu polls each queue of a channel in turn, and each poll of a queue is a queue lookup and a
``SELECT ... FOR UPDATE`` under SQLite's write lock (``BEGIN IMMEDIATE``): an idle worker on five
stage queues took a fifth of a core, and on a CPU host that slowed the denoising of every other
process. A poll here first asks once, without a lock, whether any of the channel's queues holds
a visible message.

Registered under the ``sqla`` and ``sqlalchemy`` URL schemes by ``producer.queue.configure``.
"""

from __future__ import annotations

from queue import Empty
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as kombu_sqla
from sqlalchemy import create_engine, select

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

    def _poll(self, cycle: Any, callback: Any, timeout: float | None = None) -> Any:
        if not self._any_waiting(self._active_queues):
            raise Empty()
        return super()._poll(cycle, callback, timeout)

    def _any_waiting(self, queues: list[str]) -> bool:
        """Whether one of ``queues`` holds a message nobody has taken: one read, no lock."""
        message, queue = self.message_cls, self.queue_cls
        try:
            found = self.session.execute(
                select(message.id)
                .join(queue, queue.id == message.queue_id)
                .where(message.visible.is_(True), queue.name.in_(queues))
                .limit(1)
            ).first()
        finally:
            self.session.commit()  # ends the read: SQLite writers wait for open readers
        return found is not None


class Transport(kombu_sqla.Transport):
    Channel = Channel


def register() -> None:
    for scheme in ("sqla", "sqlalchemy"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
