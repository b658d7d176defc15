"""Bulk runs: files read as rows, every bad row reported by line and field with nothing written,
resumed by name, paused, resumed, canceled and retried; against real SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from migrations import upgrade
from producer import batch_rows, batch_steering, batches
from producer.client import Client
from producer.db import session_scope
from producer.errors import BatchNotFound, JobTimeout
from producer.models import Batch, Job, OutboxMessage, StageRun, utcnow
from producer.scheduling import next_waiting
from producer.settings import Settings

OPTIONS: dict[str, Any] = {"n": 1, "steps": 4, "width": 64, "height": 64}


@pytest.fixture(params=["sqlite", "postgresql"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Client:
    if request.param == "sqlite":
        settings = Settings(home=tmp_path)
    else:
        redis_url = request.getfixturevalue("redis_url")
        settings = Settings(
            home=tmp_path,
            database_url=str(request.getfixturevalue("postgres_url")),
            broker_url=redis_url,
        )
    upgrade(settings.resolved_database_url)
    return Client(settings)


def _count(client: Client, model: Any, *where: Any) -> int:
    with session_scope(client.settings.resolved_database_url) as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _batch(client: Client, batch_id: str) -> Batch:
    with session_scope(client.settings.resolved_database_url) as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        session.expunge(batch)
        return batch


def test_files_of_each_kind_become_rows_with_their_line_numbers(tmp_path: Path) -> None:
    text = tmp_path / "p.txt"
    text.write_text("a red fox\n\n  \na blue bird\n")
    assert batch_rows.read_rows(text) == [
        (1, {"prompt": "a red fox"}),
        (4, {"prompt": "a blue bird"}),
    ]
    parti = tmp_path / "PartiPrompts.tsv"  # loads as it is: the first column is the prompt
    parti.write_text(
        "Prompt\tCategory\tChallenge\tNote\nbond\tAbstract\tBasic\t\ncat\tAnimals\tx\t\n"
    )
    assert batch_rows.read_rows(parti) == [(2, {"prompt": "bond"}), (3, {"prompt": "cat"})]
    table = tmp_path / "p.csv"
    table.write_text("seed,prompt,steps\n7,a fox,12\n")
    assert batch_rows.read_rows(table) == [(2, {"prompt": "a fox", "seed": 7, "steps": 12})]
    lines = tmp_path / "p.jsonl"
    lines.write_text(json.dumps({"prompt": "a fox", "guidance": 3.5}) + "\n")
    assert batch_rows.read_rows(lines) == [(1, {"prompt": "a fox", "guidance": 3.5})]
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "ok"}\n[1, 2]\n')
    with pytest.raises(batch_rows.InvalidRows, match="line 2: row: must be a JSON object"):
        batch_rows.read_rows(bad)
    with pytest.raises(batch_rows.InvalidRows, match="file: must end in one of"):
        batch_rows.read_rows(tmp_path / "p.xlsx")


def test_every_bad_row_is_named_by_line_and_field_and_nothing_is_written(client: Client) -> None:
    rows = [
        (1, {"prompt": "a fox"}),
        (2, {"prompt": ""}),
        (3, {"prompt": "a fox", "steps": 0}),
        (4, {"prompt": "a fox", "colour": "red"}),
        (5, {"prompt": "a fox", "width": 63}),
        (6, {"prompt": "a fox", "model": "../etc"}),
        (7, {"prompt": "a fox", "seed": "many"}),
    ]
    with pytest.raises(batch_rows.InvalidRows) as caught:
        batches.submit(client, "bad", rows, defaults=OPTIONS)
    named = {(e.line, e.field) for e in caught.value.errors}
    assert named == {
        (2, "prompt"),
        (3, "steps"),
        (4, "colour"),
        (5, "width"),
        (6, "model"),
        (7, "seed"),
    }
    assert _count(client, Job) == 0 and _count(client, Batch) == 0
    done = batches.submit(client, "bad", rows, defaults=OPTIONS, skip_invalid=True)
    assert done.submitted == 1 and len(done.invalid) == 6
    assert _count(client, Job, Job.lane == "bulk", Job.batch_row == 1) == 1


def test_the_same_name_resumes_the_batch_and_submits_each_row_once(client: Client) -> None:
    rows = [(line, {"prompt": f"a fox {line}"}) for line in range(1, 11)]
    first = batches.submit(client, "nightly", rows[:4], defaults=OPTIONS)  # then killed, say
    again = batches.submit(client, "nightly", rows, defaults=OPTIONS)
    assert again.batch_id == first.batch_id
    assert (first.submitted, again.submitted, again.already) == (4, 6, 4)
    assert _count(client, Job, Job.batch_id == first.batch_id) == 10
    # Each job's first message went; none is left to the relay.
    assert _count(client, OutboxMessage) == 0
    with session_scope(client.settings.resolved_database_url) as session:
        view = batch_steering.summary(session, session.get(Batch, first.batch_id))  # type: ignore[arg-type]
    assert view["jobs"] == 10 and view["counts"]["queued"] == 10 and view["done"] == 0


def test_pause_holds_the_batch_resume_sends_it_again_cancel_ends_it(client: Client) -> None:
    done = batches.submit(
        client, "b", [(1, {"prompt": "x"}), (2, {"prompt": "y"})], defaults=OPTIONS
    )
    db = client.settings.resolved_database_url
    with session_scope(db) as session:
        batch_steering.pause(session, session.get(Batch, done.batch_id))  # type: ignore[arg-type]
    with session_scope(db) as session:
        assert next_waiting(session, "expand", utcnow()) == []  # nothing of it is claimable
    with session_scope(db) as session:
        sent = batch_steering.resume(session, session.get(Batch, done.batch_id))  # type: ignore[arg-type]
    assert sent == 2 and _count(client, OutboxMessage) == 2
    with session_scope(db) as session:
        assert len(next_waiting(session, "expand", utcnow())) == 2
        assert batch_steering.cancel(session, session.get(Batch, done.batch_id)) == 2  # type: ignore[arg-type]
    assert _count(client, Job, Job.status == "canceled") == 2


def test_retry_failed_queues_a_failed_job_again_from_its_failed_stage(client: Client) -> None:
    done = batches.submit(client, "r", [(1, {"prompt": "x"})], defaults=OPTIONS)
    db = client.settings.resolved_database_url
    with session_scope(db) as session:
        session.execute(update(Job).values(status="failed", error="expand: boom"))
        session.execute(
            update(StageRun).where(StageRun.stage == "expand").values(status="failed", attempts=5)
        )
    with session_scope(db) as session:
        assert batch_steering.retry_failed(session, session.get(Batch, done.batch_id)) == 1  # type: ignore[arg-type]
    with session_scope(db) as session:
        job = session.scalars(select(Job)).one()
        run = next(r for r in job.stage_runs if r.stage == "expand")
        assert (job.status, job.error, run.status, run.attempts) == ("queued", None, "queued", 0)
    assert _batch(client, done.batch_id).status == "active"


def test_the_client_reads_a_batch_and_waits_for_its_end(client: Client) -> None:
    batch_id = client.submit_batch([{"prompt": "x"}, {"prompt": "y"}], name="w", **OPTIONS)
    view = client.batch(batch_id)
    assert (view["jobs"], view["done"], view["counts"]["queued"]) == (2, 0, 2)
    with pytest.raises(JobTimeout, match="0 of 2 jobs ended"):
        client.wait_batch(batch_id, timeout=0.3, poll_interval=0.1)
    with pytest.raises(BatchNotFound):
        client.batch("no-such-batch")
    seen: list[int] = []
    with session_scope(client.settings.resolved_database_url) as session:
        batch_steering.cancel(session, session.get(Batch, batch_id))  # type: ignore[arg-type]
    ended = client.wait_batch(batch_id, timeout=5, on_progress=lambda v: seen.append(v["done"]))
    assert (ended["done"], ended["counts"]["canceled"], seen) == (2, 2, [2])
