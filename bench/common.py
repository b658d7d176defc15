"""What the throughput benchmarks share: workloads, clusters with production clocks, reading
jobs back, one markdown printer, and the median's confidence interval."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from producer.db import in_transaction
from producer.jobs import get_job
from producer.models import Job, utcnow
from producer.settings import Settings
from producer.stage_outputs import DenoiseOutput
from testbed.cluster import Cluster

BASE_PROMPTS = [
    "a lighthouse on a cliff",
    "a red fox in the snow",
    "a bowl of ramen",
    "an astronaut on a horse",
    "a watercolor map of an island",
    "a robot reading a book",
    "a castle at sunset",
    "a cat wearing a hat",
    "a city street in the rain",
    "a forest with a river",
]
PARAPHRASES = ["{p}", "a photo of {p}", "{p}, high detail", "{p}, digital art", "an image of {p}"]


@dataclass
class Table:
    """One result table: what every benchmark returns, and ``print_table`` prints."""

    title: str
    columns: list[str]  # a column whose name ends in ":" is left-aligned (text)
    rows: list[list[str]]
    note: str = ""
    footer: list[str] = field(default_factory=list)


def print_table(table: Table) -> None:
    print(f"\n### {table.title}\n")
    print("| " + " | ".join(c.removesuffix(":") for c in table.columns) + " |")
    print("|" + "|".join("---" if c.endswith(":") else "---:" for c in table.columns) + "|")
    for row in table.rows:
        print("| " + " | ".join(row) + " |")
    for line in table.footer:
        print(line)
    if table.note:
        print(f"\n{table.note}")


def cluster(
    root: Path, name: str, model: Path, redis_url: str, database_url: str, **extra: str
) -> Cluster:
    # Production-like clocks: no fault injection here.
    settings = {
        "stage_lease_seconds": "60",
        "sweep_interval_seconds": "2",
        "relay_grace_seconds": "2",
        "requeue_after_seconds": "600",
        "stall_after_seconds": "0",
    }
    return Cluster(root / name, model, database_url, redis_url, **(settings | extra))


def run_jobs(
    cluster: Cluster, specs: list[dict[str, Any]], poll_s: float = 0.25
) -> tuple[float, list[str]]:
    """Submit ``specs`` and wait for every job's end; the seconds it took, and the job ids."""
    started = time.perf_counter()
    ids = [cluster.client.submit(**spec).id for spec in specs]
    cluster.drain(ids, 3600, poll_s)
    return time.perf_counter() - started, ids


def queue_wall(cluster: Cluster, specs: list[dict[str, Any]]) -> tuple[float, list[str]]:
    """Seconds from the first submit to the last job's end, read from the jobs' own records:
    exact, so the bench can look for the end seldom (its queries take CPU from the worker)."""
    started = utcnow()
    _, ids = run_jobs(cluster, specs, poll_s=1.0)
    ended = in_transaction(
        cluster.settings.resolved_database_url,
        lambda s: s.scalar(select(func.max(Job.finished_at)).where(Job.id.in_(ids))),
    )
    return (ended - started).total_seconds(), ids


class HasSettings(Protocol):
    @property
    def settings(self) -> Settings: ...


def read_jobs(cluster: HasSettings, ids: Sequence[str]) -> list[Job]:
    """The finished jobs (of a cluster or deployment), with their stage runs, images and
    metrics loaded."""

    def read(session: Session) -> list[Job]:
        jobs = [get_job(session, job_id, full=True) for job_id in ids]
        session.expunge_all()  # kept as loaded: the commit does not expire them
        return jobs

    return in_transaction(cluster.settings.resolved_database_url, read)


def denoise_output(job: Job) -> DenoiseOutput:
    run = next(run for run in job.stage_runs if run.stage == "denoise")
    return DenoiseOutput.model_validate(run.output)


def median_interval(ordered: list[float]) -> tuple[float, float]:
    """A distribution-free 95% confidence interval for the median of ``ordered`` (sorted):
    the order statistics of ranks n/2 -+ 1.96 sqrt(n)/2 (normal approximation of the
    binomial(n, 1/2) count of rounds below the median)."""
    n = len(ordered)
    half_width = 1.96 * math.sqrt(n) / 2
    low, high = math.floor(n / 2 - half_width), math.ceil(1 + n / 2 + half_width)  # 1-based
    return ordered[max(low - 1, 0)], ordered[min(high - 1, n - 1)]
