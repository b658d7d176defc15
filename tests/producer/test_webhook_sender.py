"""The webhook sender: bounded concurrency, a per-host limit, and a receiver that accepts and
never answers holding up nobody else's deliveries."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from migrations import upgrade
from producer.db import session_scope
from producer.jobs import create_job
from producer.models import WebhookDelivery
from producer.spec import validate_spec
from producer.webhook_sender import WebhookSender
from tests.producer.api_app import SMALL
from tests.webhook_receiver import WebhookReceiver


class Silent:
    """Accepts every connection and never answers; counts how many it holds at once."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.held: list[socket.socket] = []
        self.most_at_once = 0
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            open_now = sum(1 for c in self.held if _open(c))
            self.most_at_once = max(self.most_at_once, open_now)

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        for conn in self.held:
            conn.close()


def _open(conn: socket.socket) -> bool:
    try:
        conn.setblocking(False)
        return conn.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


@pytest.fixture()
def silent() -> Iterator[Silent]:
    server = Silent()
    yield server
    server.close()


def test_a_silent_receiver_holds_up_only_its_own_deliveries(tmp_path: Path, silent: Silent) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(db)
    healthy = WebhookReceiver()
    urls = [f"http://127.0.0.1:{silent.port}/never"] * 8 + [f"http://localhost:{healthy.port}/ok"]
    with session_scope(db) as session:
        spec = validate_spec(SMALL)
        for i, url in enumerate(urls):
            create_job(session, spec, "shapes", job_id=f"job-{i}")
            session.add(
                WebhookDelivery(job_id=f"job-{i}", event="job.finished", url=url, payload="{}")
            )
    sender = WebhookSender(
        db,
        "secret",
        max_attempts=3,
        allowed_hosts=["127.0.0.1", "localhost"],
        concurrency=4,
        per_host=2,
        timeout_s=3.0,
    )
    stop = threading.Event()
    runner = threading.Thread(target=sender.run_forever, args=(stop, 0.05), daemon=True)
    started = time.monotonic()
    runner.start()
    try:
        # The healthy receiver is served at once although 8 deliveries to the silent one came first.
        while not healthy.received and time.monotonic() - started < 2.5:
            time.sleep(0.02)
        assert healthy.received, "a silent receiver held up another host's delivery"
        assert time.monotonic() - started < 2.5  # before the silent host's first time-out
        time.sleep(0.5)
        assert silent.most_at_once == 2  # the per-host limit, not the pool's 4
    finally:
        stop.set()
        runner.join(5)
        healthy.shutdown()
    with session_scope(db) as session:
        rows = session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        assert rows[-1].status == "delivered"
        # The silent host's deliveries stay pending (claimed or backing off), none lost.
        assert {row.status for row in rows[:-1]} == {"pending"}


def test_two_senders_never_send_the_same_attempt(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(db)
    receiver = WebhookReceiver()
    url = receiver.url
    with session_scope(db) as session:
        for i in range(20):
            create_job(session, validate_spec(SMALL), "shapes", job_id=f"job-{i}")
            session.add(
                WebhookDelivery(job_id=f"job-{i}", event="job.finished", url=url, payload="{}")
            )
    senders = [
        WebhookSender(
            db, "secret", max_attempts=3, allowed_hosts=["127.0.0.1"], concurrency=20, per_host=20
        )
        for _ in range(2)
    ]
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda s=s: results.append(s.deliver_once(timeout_s=30)))
        for s in senders
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    receiver.shutdown()
    assert sum(results) == 20 and len(receiver.received) == 20
