"""A job's next stage run in the same process after a commit, instead of a message (chaining)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import delete, func, select

from migrations import upgrade
from producer.db import session_scope
from producer.jobs import create_job
from producer.models import OutboxMessage, StageRun
from producer.pipeline import ALL_QUEUES, queue_name
from producer.queue import configure
from producer.settings import Settings
from producer.spec import validate_spec
from testbed.deployments import Deployment, make_deployment
from testbed.services import RedisServer
from tests.conftest import postgres_database
from tests.worker.probes import PUBLISHES_KEY
from worker.process import start_worker, stop_worker
from worker.queue.claims import Claimed, claim_stage
from worker.queue.commits import commit_stage
from worker.queue.handoff import hand_on, may_chain
from worker.queue.sweeper import Sweeper
from worker.settings import WorkerSettings

WAIT_S = 180.0
SMALL: dict[str, Any] = {"n": 1, "steps": 4, "width": 64, "height": 64}


# --- which stage may run here: pure logic on a real Celery app's queue selection -------------


def _task(settings: Settings, queues: Sequence[str]) -> Any:
    app = Celery("chain-test", set_as_current=False)
    configure(app, settings)
    app.amqp.queues.select(list(queues))  # what ``celery worker -Q`` does before the pool forks
    return SimpleNamespace(app=app)


def test_the_next_stage_runs_here_only_if_this_worker_serves_it_and_it_is_not_a_batch(
    tmp_path: Path,
) -> None:
    settings = WorkerSettings(home=tmp_path, batch_max_images=8, stage_time_limit_seconds=100)
    everything, now = _task(settings, ALL_QUEUES), time.monotonic()
    assert may_chain(everything, settings, "encode", now)
    assert may_chain(everything, settings, "decode", now)
    # Jobs gather in the denoise queue to share a batch; without batching it is chained too.
    assert not may_chain(everything, settings, "denoise", now)
    unbatched = settings.model_copy(update={"batch_max_images": 1})
    assert may_chain(_task(unbatched, ALL_QUEUES), unbatched, "denoise", now)
    # A worker that does not consume the stage's queue sends it to the workers that do.
    light = _task(settings, [queue_name("expand"), queue_name("encode")])
    assert may_chain(light, settings, "encode", now)
    assert not may_chain(light, settings, "decode", now)
    # Past a tenth of the time limit, the next stage gets a task (and a time limit) of its own.
    assert not may_chain(everything, settings, "decode", now - 11)
    off = settings.model_copy(update={"chain_stages": False})
    assert not may_chain(_task(off, ALL_QUEUES), off, "encode", now)


# --- the chained commit: one transaction, no message, and a lost stage is still found ---------


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_chained_stage_has_no_message_and_is_sent_again_if_its_worker_is_lost(
    database: str, tmp_path: Path, redis_url: str, request: pytest.FixtureRequest
) -> None:
    db = (
        f"sqlite:///{tmp_path / 'chain.db'}"
        if database == "sqlite"
        else str(request.getfixturevalue("postgres_url"))
    )
    upgrade(db)
    # A short lease, so that the test can outlive it as a dead worker would.
    settings = WorkerSettings(
        home=tmp_path, database_url=db, broker_url=redis_url, stage_lease_seconds=0.2
    )
    with session_scope(db) as session:
        job_id = create_job(session, validate_spec({"prompt": "a fox", "seed": 1}), "tiny").id
        session.execute(delete(OutboxMessage))  # as if the submission's message had gone
    with session_scope(db) as session:
        claim = claim_stage(session, job_id, "expand", lease_seconds=60, max_attempts=3)
    assert isinstance(claim, Claimed)
    with session_scope(db) as session:  # the commit and the hand-off: one transaction
        following = commit_stage(session, job_id, "expand", claim.token, {})
        assert following == "encode"
        chained = hand_on(session, settings, job_id, following, chain=True).claimed
    assert isinstance(chained, Claimed) and chained.attempt == 1
    with session_scope(db) as session:
        encode = session.scalars(
            select(StageRun).where(StageRun.job_id == job_id, StageRun.stage == "encode")
        ).one()
        assert encode.status == "running" and encode.lease_token == chained.token
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0

    time.sleep(0.3)  # the process running encode died: its lease runs out
    app = Celery("chain-sweeper", set_as_current=False)
    configure(app, settings)
    report = Sweeper(settings.model_copy(update={"relay_grace_seconds": 0}), app).run_once()
    assert report.expired_leases == 1 and report.published == 1
    queued = redis.Redis.from_url(redis_url).llen(queue_name("encode"))
    assert queued == 1  # sent again: a worker will take the stage over


# --- through real worker processes, Redis and PostgreSQL ---------------------------------------


@contextmanager
def _deployment(
    home: Path,
    model: Path,
    redis_server: RedisServer,
    queues: Sequence[Sequence[str]] = (ALL_QUEUES,),
    fail_once: str | None = None,
    **settings: str,
) -> Iterator[Deployment]:
    """One worker per entry of ``queues``, each loaded with the probes."""
    connection = redis.Redis.from_url(redis_server.url)
    connection.flushall()
    with postgres_database() as database_url:
        dep = make_deployment(home.name, home, model, database_url, redis_server.url, **settings)
        if fail_once:
            dep.env["IMGGEN_TEST_FAIL_ONCE"] = fail_once
        upgrade(database_url)
        workers = [
            start_worker(
                env=dep.env,
                loglevel="WARNING",
                hostname=f"chain-{i}@%h",
                queues=list(served),
                include=["tests.worker.probes"],
            )
            for i, served in enumerate(queues)
        ]
        try:
            # Until a worker's first registry scan, it leaves work for the model to the hosts
            # that have registered it (a retry: one more publish): every worker registers first.
            deadline = time.monotonic() + 60
            while len(dep.registered(dep.settings.default_model, timeout=60).hosts) < len(workers):
                assert time.monotonic() < deadline, "not every worker registered the model"
                time.sleep(0.1)
            yield dep
        finally:
            for worker in workers:
                stop_worker(worker)
            connection.flushall()


def _worker_publishes(dep: Deployment) -> dict[str, int]:
    counts = redis.Redis.from_url(dep.settings.resolved_broker_url).hgetall(PUBLISHES_KEY)
    return {key.decode().rsplit(".", 1)[1]: int(value) for key, value in counts.items()}


def _attempts(dep: Deployment, job_id: str) -> dict[str, int]:
    return {s["stage"]: s["attempts"] for s in dep.client.view(job_id)["stages"]}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "sent"),
    [
        # Every stage after the first runs in the process that committed the one before.
        ({"batch_max_images": "1"}, {}),
        # Denoise jobs gather in their queue to share batches, so denoise is still a message.
        ({}, {"denoise": 2}),
        # Chaining off: every stage is a message.
        ({"chain_stages": "false"}, {"encode": 2, "denoise": 2, "decode": 2, "score": 2}),
    ],
    ids=["batching-off", "batching-on", "chaining-off"],
)
def test_a_worker_serving_every_queue_sends_only_the_stages_it_must(
    settings: dict[str, str],
    sent: dict[str, int],
    tmp_path: Path,
    tiny_model_dir: Path,
    redis_server: RedisServer,
) -> None:
    with _deployment(tmp_path / "all", tiny_model_dir, redis_server, **settings) as dep:
        jobs = [dep.client.submit(f"a fox {i}", seed=i, **SMALL) for i in range(2)]
        infos = [job.wait(timeout=WAIT_S) for job in jobs]
        assert [info["status"] for info in infos] == ["succeeded", "succeeded"]
        assert all(len(info["images"]) == 1 and info["images"][0]["metrics"] for info in infos)
        assert all(set(_attempts(dep, job.id).values()) == {1} for job in jobs)
        assert _worker_publishes(dep) == sent


@pytest.mark.slow
def test_workers_split_by_queue_send_each_other_the_stage_between_them(
    tmp_path: Path, tiny_model_dir: Path, redis_server: RedisServer
) -> None:
    light, heavy = ALL_QUEUES[:2], ALL_QUEUES[2:]  # expand, encode | denoise, decode, score
    with _deployment(
        tmp_path / "split", tiny_model_dir, redis_server, (light, heavy), batch_max_images="1"
    ) as dep:
        job = dep.client.submit("a fox", seed=3, **SMALL)
        assert job.wait(timeout=WAIT_S)["status"] == "succeeded"
        assert _worker_publishes(dep) == {"denoise": 1}


@pytest.mark.slow
def test_a_chained_stage_that_fails_is_retried_by_a_message_of_its_own(
    tmp_path: Path, tiny_model_dir: Path, redis_server: RedisServer
) -> None:
    with _deployment(tmp_path / "retry", tiny_model_dir, redis_server, fail_once="decode") as dep:
        job = dep.client.submit("a fox", seed=4, **SMALL)
        info = job.wait(timeout=WAIT_S)
        assert info["status"] == "succeeded" and len(info["images"]) == 1
        assert _attempts(dep, job.id) == {
            "expand": 1,
            "encode": 1,
            "denoise": 1,
            "decode": 2,
            "score": 1,
        }
        # Decode came after denoise in the same task; its retry went through the outbox, and
        # score was chained after the retried decode.
        assert _worker_publishes(dep) == {"denoise": 1, "decode": 1}
        with session_scope(dep.settings.resolved_database_url) as session:
            assert session.scalar(select(OutboxMessage.id)) is None
