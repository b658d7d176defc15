"""Table 1b: the queue's fixed cost per stage (claim in the scheduler's order, commit with its
hand-off, publish), run in-process with no model and no Celery worker, so the machine's
drifting speed for torch does not blur it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from sqlalchemy.orm import Session

from bench.common import Table
from migrations import upgrade
from producer.db import in_transaction
from producer.jobs import create_job
from producer.outbox import publish_now
from producer.pipeline import STAGES
from producer.queue import producer_app
from producer.spec import validate_spec
from testbed.services import postgres_database
from worker.queue.claims import Claimed
from worker.queue.commits import commit_stage
from worker.queue.handoff import Next, hand_on
from worker.queue.selection import claim_next
from worker.settings import WorkerSettings

T = TypeVar("T")


@dataclass
class Bookkeeping:
    jobs: int
    seconds: dict[str, list[float]] = field(
        default_factory=lambda: {"claim": [], "commit": [], "publish": []}
    )


def measure(root: Path, redis_url: str, jobs: int) -> Bookkeeping:
    result = Bookkeeping(jobs)

    def timed(kind: str, work: Callable[[], T]) -> T:
        started = time.perf_counter()
        value = work()
        result.seconds[kind].append(time.perf_counter() - started)
        return value

    with postgres_database() as database_url:
        upgrade(database_url)
        settings = WorkerSettings(
            home=root / "bookkeeping", database_url=database_url, broker_url=redis_url
        )
        app = producer_app(settings)
        for i in range(jobs):
            spec = validate_spec({"prompt": f"prompt {i}", "seed": i})
            job_id = in_transaction(database_url, partial(create_job, spec=spec, model="m")).id
            for stage in STAGES:
                claim = partial(_claim, job_id=job_id, stage=stage)
                claimed = timed("claim", partial(in_transaction, database_url, claim))
                commit = partial(_commit, settings=settings, claimed=claimed)
                following = timed("commit", partial(in_transaction, database_url, commit))
                if following is not None:
                    send = partial(publish_now, database_url, app, job_id, following.stage)
                    timed("publish", send)
    return result


def _claim(session: Session, job_id: str, stage: str) -> Claimed:
    """As a worker claims: the run the scheduler puts first (the only one waiting here)."""
    claimed = claim_next(session, stage, job_id, lease_seconds=60, max_attempts=3)
    assert isinstance(claimed, Claimed)
    return claimed


def _commit(session: Session, settings: WorkerSettings, claimed: Claimed) -> Next | None:
    """The stage's commit and its hand-off, in one transaction as a worker does them."""
    job_id = claimed.job.id
    following = commit_stage(session, job_id, claimed.stage, claimed.token, {})
    if following is None:
        return None
    return hand_on(session, settings, job_id, following, chain=False)


def table(result: Bookkeeping) -> Table:
    medians = {kind: 1000 * statistics.median(values) for kind, values in result.seconds.items()}
    per_job = 1000 * sum(sum(values) for values in result.seconds.values()) / result.jobs
    title = (
        f"1b. Bookkeeping: {result.jobs} jobs x {len(STAGES)} stages, PostgreSQL + Redis, "
        "in-process (no worker, no model); medians per stage"
    )
    columns = ["claim ms", "commit ms", "publish ms", "all five stages, per job ms"]
    row = [f"{medians['claim']:.1f}", f"{medians['commit']:.1f}", f"{medians['publish']:.1f}"]
    return Table(title, columns, [[*row, f"{per_job:.0f}"]])
