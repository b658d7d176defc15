"""A small cluster for fault injection: a private Redis, a real database, real worker processes.

Used by the chaos tests (reduced sizes) and by ``bench/chaos.py`` (full sizes). Every scenario
ends with ``check`` asserting the promise: each job ended in exactly one terminal state, one
image row and one file per (job, image), attempts within the cap, and the outbox empty.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
from sqlalchemy import func, select

from migrations import upgrade
from producer.client import Client
from producer.db import in_transaction
from producer.models import TERMINAL, Image, Job, OutboxMessage, StageRun, utcnow
from producer.pipeline import ALL_QUEUES
from testbed.deployments import make_deployment
from testbed.services import free_port
from worker.process import start_worker, stop_worker

TERMINAL_VALUES = {status.value for status in TERMINAL}
MAX_ATTEMPTS = 8
# Jobs big enough that a stage is often running when a fault strikes (~0.2-0.5 s of denoising).
LOAD = {"n": 2, "steps": 12, "width": 128, "height": 128}


@dataclass
class Outcome:
    jobs: int
    succeeded: int
    lost: int  # not terminal when the drain ended
    duplicates: int  # extra image rows or files
    over_cap: int  # stages with attempts above the cap
    outbox_left: int
    drain_s: float
    faults: int = 0
    notes: list[str] = field(default_factory=list)
    # Per fault: seconds from the fault until the cluster next finished a stage (None: never).
    recovery_s: list[float | None] = field(default_factory=list)

    @property
    def slowest_recovery_s(self) -> float | None:
        known = [r for r in self.recovery_s if r is not None]
        return max(known) if known and len(known) == len(self.recovery_s) else None

    def assert_clean(self) -> None:
        assert (self.lost, self.duplicates, self.over_cap, self.outbox_left) == (0, 0, 0, 0), self
        assert self.succeeded == self.jobs, self


class Cluster:
    def __init__(
        self, home: Path, model: Path, database_url: str, redis_url: str, **extra: str
    ) -> None:
        self.home = home
        clocks = {
            "stage_max_attempts": str(MAX_ATTEMPTS),
            # Short clocks, so a lost stage is found within seconds, not minutes.
            "stage_lease_seconds": "3",
            "sweep_interval_seconds": "0.5",
            "relay_grace_seconds": "0.5",
            "stall_after_seconds": "8",
        }
        deployment = make_deployment(
            home.name, home, model, database_url, redis_url, **(clocks | extra)
        )
        self.settings, self.env = deployment.settings, deployment.env
        self.client = Client(self.settings)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.metrics_ports: dict[int, int] = {}  # worker pid -> its Prometheus port
        self.fault_times: list[datetime] = []
        upgrade(database_url)

    def start_worker(
        self, concurrency: int = 2, include: Sequence[str] = (), queues: Sequence[str] = ALL_QUEUES
    ) -> subprocess.Popen[bytes]:
        # Each worker logs to a file of its own in the cluster's home, not over the output of
        # the test or benchmark (the worker keeps its own copy of the descriptor).
        self.home.mkdir(parents=True, exist_ok=True)
        port = free_port()
        with (self.home / f"worker-{len(self.workers)}.log").open("ab") as log:
            process = start_worker(
                env=self.env | {"IMGGEN_METRICS_PORT": str(port)},
                log=log,
                concurrency=concurrency,
                loglevel="WARNING",
                hostname=f"chaos-{len(self.workers)}@%h",
                include=include,
                queues=queues,
            )
        self.workers.append(process)
        self.metrics_ports[process.pid] = port
        return process

    def metric(self, worker: subprocess.Popen[bytes], name: str) -> float:
        """The sum of sample ``name`` over its labels, as ``worker`` serves it now."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"http://127.0.0.1:{self.metrics_ports[worker.pid]}/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        )

    def stop(self) -> None:
        for process in self.workers:
            stop_worker(process, timeout=20)

    def submit(self, count: int, prefix: str = "job") -> list[str]:
        return [
            self.client.submit(f"{prefix} {i}", seed=i, **LOAD).id
            for i in range(count)  # type: ignore[arg-type]
        ]

    def submit_batch(self, count: int, name: str = "chaos") -> list[str]:
        """``count`` jobs as one batch (the bulk lane, inserted in bulk); their ids."""
        rows = [{"prompt": f"{name} {i}", "seed": i} for i in range(count)]
        batch_id = self.client.submit_batch(rows, name=name, **LOAD)
        return in_transaction(
            self.settings.resolved_database_url,
            lambda s: list(s.scalars(select(Job.id).where(Job.batch_id == batch_id))),
        )

    def pool_processes(self, worker: subprocess.Popen[bytes]) -> list[int]:
        """Pids of the worker's pool (child) processes."""
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def running_stages(self) -> int:
        query = select(func.count()).select_from(StageRun).where(StageRun.status == "running")
        return int(in_transaction(self.settings.resolved_database_url, lambda s: s.scalar(query)))

    def kill_worker(self, worker: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its pool: nothing gets to clean up."""
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    def drain(self, job_ids: Sequence[str], timeout: float, poll_s: float = 0.25) -> float:
        started = time.monotonic()
        deadline = started + timeout
        db = self.settings.resolved_database_url
        unfinished = (
            select(func.count())
            .select_from(Job)
            .where(Job.id.in_(job_ids), Job.status.not_in(TERMINAL_VALUES))
        )
        while time.monotonic() < deadline:
            try:
                if in_transaction(db, lambda s: s.scalar(unfinished)) == 0:
                    break
            except Exception:  # noqa: BLE001 - the database may be the fault under test
                pass
            time.sleep(poll_s)
        return time.monotonic() - started

    def fault(self) -> None:
        """Note that a fault strikes now (for the recovery times in the outcome)."""
        self.fault_times.append(utcnow())

    def check(self, job_ids: Sequence[str], drain_s: float, faults: int = 0) -> Outcome:
        db = self.settings.resolved_database_url
        fault_times = list(self.fault_times)

        def read(session):  # type: ignore[no-untyped-def]
            jobs = session.scalars(select(Job).where(Job.id.in_(job_ids))).all()
            image_rows = dict(
                session.execute(
                    select(Image.job_id, func.count())
                    .where(Image.job_id.in_(job_ids))
                    .group_by(Image.job_id)
                ).all()
            )
            over_cap = session.scalar(
                select(func.count())
                .select_from(StageRun)
                .where(StageRun.job_id.in_(job_ids), StageRun.attempts > MAX_ATTEMPTS)
            )
            outbox = session.scalar(select(func.count()).select_from(OutboxMessage))
            next_finish = [
                session.scalar(
                    select(func.min(StageRun.finished_at)).where(
                        StageRun.job_id.in_(job_ids), StageRun.finished_at > at
                    )
                )
                for at in fault_times
            ]
            return (
                [(j.id, j.status, j.spec["n"], j.error) for j in jobs],
                image_rows,
                over_cap,
                outbox,
                [
                    None if done is None else round((done - at).total_seconds(), 2)
                    for at, done in zip(fault_times, next_finish, strict=True)
                ],
            )

        jobs, image_rows, over_cap, outbox, recovery = in_transaction(db, read)
        duplicates, notes = 0, []
        artifacts = Path(self.settings.resolved_artifacts_url) / "jobs"
        for job_id, status, n, error in jobs:
            if status != "succeeded":
                notes.append(f"{job_id} {status}: {error}")
                continue
            files = list((artifacts / job_id).glob("image-*.png"))
            leftovers = list((artifacts / job_id).glob(".tmp-*"))
            duplicates += (
                max(image_rows.get(job_id, 0) - n, 0) + max(len(files) - n, 0) + len(leftovers)
            )
            if image_rows.get(job_id, 0) < n or len(files) < n:
                notes.append(f"{job_id}: {image_rows.get(job_id, 0)} rows, {len(files)} files")
        return Outcome(
            jobs=len(job_ids),
            succeeded=sum(status == "succeeded" for _, status, _, _ in jobs),
            lost=sum(status not in TERMINAL_VALUES for _, status, _, _ in jobs)
            + len(job_ids)
            - len(jobs),
            duplicates=duplicates,
            over_cap=int(over_cap),
            outbox_left=int(outbox),
            drain_s=round(drain_s, 1),
            faults=faults,
            notes=notes[:5],
            recovery_s=recovery,
        )
