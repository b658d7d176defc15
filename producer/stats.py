"""How the deployment did over a time window, from SQL: throughput, stage latency percentiles,
queue depth over time and failure reasons (``imggen stats``).

Queue depth over time is rebuilt from the stage runs' ``enqueued_at`` and ``started_at`` (a
run waits between the two), so it needs no sampler running beforehand; a stage retried after a
backoff counts as waiting from its last enqueue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import quantiles
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from producer.models import Image, Job, JobStatus, StageRun, StageStatus, utcnow
from producer.overview import failure_reasons
from producer.pipeline import STAGES

_SPAN = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
BUCKETS = 30  # points on each curve
MAX_RUNS = 200_000  # stage runs read for the queue-depth curves


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``30m``, ``2h``, ``1d``… back from now, or an ISO time; ValueError otherwise."""
    now = now or utcnow()
    found = _SPAN.match(text.strip())
    if found:
        return now - timedelta(seconds=float(found[1]) * _UNITS[found[2]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a span (30m, 2h, 1d) or an ISO time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=now.tzinfo)


@dataclass
class Stats:
    since: datetime
    until: datetime
    jobs: dict[str, int]  # ended in the window, by status
    images: int
    latency: dict[str, dict[str, float]]  # stage -> runs, p50, p95, p99 (seconds)
    times: list[datetime] = field(default_factory=list)  # the curves' points
    finished_per_minute: list[float] = field(default_factory=list)
    queue_depth: dict[str, list[int]] = field(default_factory=dict)  # stage -> per point
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        span = (self.until - self.since).total_seconds()
        return self.images / span if span > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "jobs": self.jobs,
            "images": self.images,
            "images_per_second": round(self.images_per_second, 4),
            "latency": self.latency,
            "times": [moment.isoformat() for moment in self.times],
            "finished_per_minute": self.finished_per_minute,
            "queue_depth": self.queue_depth,
            "failures": self.failures,
        }


def gather(session: Session, since: datetime, now: datetime | None = None) -> Stats:
    until = now or utcnow()
    ended = session.execute(
        select(Job.status, func.count())
        .where(Job.finished_at >= since, Job.finished_at <= until)
        .group_by(Job.status)
    )
    jobs = {status.value: 0 for status in JobStatus if status.value not in ("queued", "running")}
    jobs.update(dict(ended.all()))
    images = session.scalar(
        select(func.count()).select_from(Image).where(Image.created_at >= since)
    )
    times = [since + (until - since) * (i + 1) / BUCKETS for i in range(BUCKETS)]
    return Stats(
        since=since,
        until=until,
        jobs=jobs,
        images=images or 0,
        latency=_latency(session, since),
        times=times,
        finished_per_minute=_finished_per_minute(session, since, times),
        queue_depth=_queue_depth(session, since, times),
        failures=failure_reasons(session, since),
    )


def _latency(session: Session, since: datetime) -> dict[str, dict[str, float]]:
    rows = session.execute(
        select(StageRun.stage, StageRun.duration_s).where(
            StageRun.status == StageStatus.SUCCEEDED.value,
            StageRun.finished_at >= since,
            StageRun.duration_s.is_not(None),
        )
    )
    durations: dict[str, list[float]] = {}
    for stage, seconds in rows:
        if seconds is not None:
            durations.setdefault(stage, []).append(float(seconds))
    latency = {}
    for stage in STAGES:
        found = sorted(durations.get(stage, []))
        if not found:
            continue
        cuts = quantiles(found, n=100, method="inclusive") if len(found) > 1 else found * 99
        latency[stage] = {
            "runs": len(found),
            "p50": round(cuts[49], 4),
            "p95": round(cuts[94], 4),
            "p99": round(cuts[98], 4),
        }
    return latency


def _finished_per_minute(session: Session, since: datetime, times: list[datetime]) -> list[float]:
    ended = session.scalars(select(Job.finished_at).where(Job.finished_at >= since))
    finished = sorted(moment for moment in ended if moment is not None)
    rates, start, index = [], since, 0
    for end in times:
        count = 0
        while index < len(finished) and finished[index] <= end:
            count, index = count + 1, index + 1
        minutes = max((end - start).total_seconds() / 60, 1e-9)
        rates.append(round(count / minutes, 3))
        start = end
    return rates


def _queue_depth(session: Session, since: datetime, times: list[datetime]) -> dict[str, list[int]]:
    rows = session.execute(
        select(StageRun.stage, StageRun.status, StageRun.enqueued_at, StageRun.started_at)
        .where(
            StageRun.enqueued_at.is_not(None),
            or_(StageRun.started_at.is_(None), StageRun.started_at >= since),
        )
        .limit(MAX_RUNS)
    ).all()
    depth = {stage: [0] * len(times) for stage in STAGES}
    for stage, status, enqueued, started in rows:
        if stage not in depth or enqueued is None:
            continue
        if started is None and status != StageStatus.QUEUED.value:
            continue  # never started and not waiting: canceled
        for i, moment in enumerate(times):
            if enqueued <= moment and (started is None or started > moment):
                depth[stage][i] += 1
    return depth
