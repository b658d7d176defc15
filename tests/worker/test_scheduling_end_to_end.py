"""The scheduler through one real worker on the default layout (every queue, concurrency 1),
Redis and PostgreSQL: batches form during a bulk backlog, interactive work overtakes it, and a
waiting client learns of a job's end from the workers' events, not its next poll."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producer.db import in_transaction
from producer.jobs import get_job
from producer.stage_outputs import DenoiseOutput
from testbed.deployments import Deployment, make_deployment, with_worker
from testbed.services import RedisServer
from tests.conftest import postgres_database

WAIT_S = 240.0
# n=2 and 8 images a batch: four jobs fill one.
SHAPE: dict[str, Any] = {"n": 2, "steps": 6, "width": 64, "height": 64, "guidance": 4.0}


@pytest.fixture(scope="module")
def one_worker(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, redis_server: RedisServer
) -> Iterator[Deployment]:
    home = tmp_path_factory.mktemp("scheduling")
    broker = redis_server.url.rsplit("/", 1)[0] + "/5"
    with postgres_database() as database_url:
        dep = make_deployment(
            "sched", home, tiny_model_dir, database_url, broker, exact_cache="false"
        )
        yield from with_worker(dep)


def _runs(dep: Deployment, job_id: str) -> dict[str, Any]:
    def read(session: Any) -> dict[str, Any]:
        return {run.stage: run for run in get_job(session, job_id, full=True).stage_runs}

    return in_transaction(dep.settings.resolved_database_url, read)


def test_a_bulk_backlog_forms_full_batches_on_one_worker(one_worker: Deployment) -> None:
    handles = [
        one_worker.client.submit(f"a fox {i}", seed=i, lane="bulk", **SHAPE) for i in range(16)
    ]
    assert all(h.wait(timeout=WAIT_S)["status"] == "succeeded" for h in handles)
    sizes = [
        DenoiseOutput.model_validate(_runs(one_worker, h.id)["denoise"].output).cache.batch_jobs
        for h in handles
    ]
    batches = sum(1 / size for size in sizes)
    assert len(handles) / batches >= 0.9 * 4, sizes  # jobs per batch, of at most 4


def test_an_interactive_job_overtakes_a_bulk_backlog(one_worker: Deployment) -> None:
    started = time.monotonic()
    one_worker.client.submit("alone", seed=99, **SHAPE).wait(timeout=WAIT_S)
    alone_s = time.monotonic() - started

    bulk = [
        one_worker.client.submit(f"a bulk fox {i}", seed=i, lane="bulk", **SHAPE) for i in range(40)
    ]
    submitted = time.monotonic()
    interactive = one_worker.client.submit("in a hurry", seed=7, **SHAPE)
    info = interactive.wait(timeout=WAIT_S)
    took_s = time.monotonic() - submitted
    assert info["status"] == "succeeded"
    mine = _runs(one_worker, interactive.id)["expand"].started_at
    for handle in bulk:
        handle.wait(timeout=WAIT_S)
    later = [_runs(one_worker, h.id)["expand"].started_at > mine for h in bulk]
    assert sum(later) >= 36, f"{sum(later)} of 40 bulk jobs started after it"
    assert took_s <= 3 * alone_s + 2.0, (took_s, alone_s)


def test_waiting_is_woken_by_the_job_events_not_the_next_poll(one_worker: Deployment) -> None:
    started = time.monotonic()
    # A poll every 30 s: only the workers' events can end the wait sooner.
    info = one_worker.client.submit("a quick fox", seed=3, **SHAPE).wait(
        timeout=WAIT_S, poll_interval=30.0
    )
    assert info["status"] == "succeeded"
    assert time.monotonic() - started < 20.0
