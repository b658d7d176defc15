"""Callback URLs may not reach internal addresses: refused at submit in every notation, and
again at send time against the address the name resolves to then."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from migrations import upgrade
from producer.callbacks import CallbackRefused, check_callback_url, resolve_target
from producer.db import session_scope
from producer.errors import InvalidJobSpec
from producer.jobs import create_job
from producer.models import WebhookDelivery
from producer.spec import JobSpec, validate_spec
from producer.webhook_sender import WebhookSender
from tests.producer.api_app import SMALL, Api
from tests.webhook_receiver import WebhookReceiver

INTERNAL = [
    "http://127.0.0.1/hook",
    "http://127.1/hook",  # short form
    "http://2130706433/hook",  # one decimal number
    "http://0x7f000001/hook",  # hex
    "http://0x7f.0.0.1/hook",
    "http://0177.0.0.1/hook",  # octal
    "http://0/hook",
    "http://0.0.0.0:8080/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped
    "http://[::ffff:7f00:1]/hook",
    "http://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of 169.254.169.254
    "http://[2002:a00:1::]/hook",  # 6to4 of 10.0.0.1
    "http://[fe80::1%25eth0]/hook",  # link-local with a zone
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://10.0.0.1/hook",
    "http://172.16.5.4/hook",
    "http://192.168.1.1/hook",
    "http://100.64.0.1/hook",  # carrier-grade NAT
    "http://224.0.0.1/hook",  # multicast
    "http://localhost/hook",
    "http://LOCALHOST./hook",
    "http://api.localhost/hook",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://printer.local/hook",
]


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_addresses_are_refused_in_every_notation(url: str) -> None:
    with pytest.raises(CallbackRefused, match="internal"):
        check_callback_url(url)
    with pytest.raises(InvalidJobSpec) as refused:
        validate_spec(SMALL | {"callback_url": url})
    assert list(refused.value.errors) == ["callback_url"]


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "http:///nohost", "https://user:pw@example.com/", "http://x:99999/"],
)
def test_other_unusable_urls_are_refused(url: str) -> None:
    with pytest.raises(CallbackRefused):
        check_callback_url(url)


def test_public_addresses_and_names_pass_and_allowed_hosts_may_be_internal() -> None:
    for url in (
        "https://hooks.example.com/imggen",
        "http://93.184.216.34:8080/x",
        "http://[2606:4700::1111]/",
    ):
        check_callback_url(url)
    check_callback_url("http://receiver.internal/hook", allowed_hosts=["Receiver.Internal"])
    check_callback_url("http://127.0.0.1:9000/hook", allowed_hosts=["127.0.0.1"])
    spec = validate_spec(SMALL | {"callback_url": "http://127.0.0.1/h"}, ["127.0.0.1"])
    # Read back from its row (no submit-time policy in hand), a stored spec is not re-judged.
    assert JobSpec.model_validate(spec.model_dump()).callback_url == "http://127.0.0.1/h"


def test_the_api_refuses_an_internal_callback_with_422_naming_it(api: Api) -> None:
    response = api.submit(SMALL | {"callback_url": "http://169.254.169.254/latest/meta-data/"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "callback_url"]
    assert api.jobs_in_db() == 0


@pytest.fixture()
def rebinding(monkeypatch: pytest.MonkeyPatch) -> str:
    """A public-looking name that resolves to the loopback (DNS rebinding), as a resolver would
    answer for it: the DNS answer is this test's input."""
    real = socket.getaddrinfo

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "rebind.example.com" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return "rebind.example.com"


def test_send_time_resolves_checks_and_connects_to_the_checked_address(rebinding: str) -> None:
    check_callback_url(f"http://{rebinding}/hook")  # a name: nothing to judge at submit
    with pytest.raises(CallbackRefused, match="resolves to an internal address"):
        resolve_target(f"http://{rebinding}:8080/hook")
    target = resolve_target(f"http://{rebinding}:8080/x?y=1", allowed_hosts=[rebinding])
    assert (target.host, target.address) == (rebinding, "127.0.0.1")
    assert target.url == "http://127.0.0.1:8080/x?y=1"


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.shutdown()


def test_a_callback_that_resolves_internal_is_never_sent_and_fails_at_once(
    tmp_path: Path, receiver: WebhookReceiver, rebinding: str
) -> None:
    """A delivery whose host resolves to an internal address when it is sent reaches nothing;
    an allowed host is delivered to, with its own Host header."""
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(db)
    port = receiver.port
    urls = {"refused": f"http://{rebinding}:{port}/hook", "allowed": f"http://127.0.0.1:{port}/ok"}
    with session_scope(db) as session:
        for name, url in urls.items():
            job = create_job(session, validate_spec(SMALL, ["127.0.0.1"]), "shapes", job_id=name)
            session.add(WebhookDelivery(job_id=job.id, event="job.finished", url=url, payload="{}"))
    sender = WebhookSender(db, "secret", max_attempts=5, allowed_hosts=["127.0.0.1"])
    assert sender.deliver_once(timeout_s=30) == 1
    sender.close()
    assert [headers["Host"] for headers, _ in receiver.received] == [f"127.0.0.1:{port}"]
    with session_scope(db) as session:
        rows = {row.job_id: row for row in session.scalars(select(WebhookDelivery))}
        refused = rows["refused"]
        assert (refused.status, refused.attempts) == ("failed", 1)
        assert "internal address" in (refused.last_error or "")
        assert rows["allowed"].status == "delivered"
