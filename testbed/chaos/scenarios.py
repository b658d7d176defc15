"""The chaos scenarios, sized by their callers: each injects faults under load and drains."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable

import redis
from celery.signals import after_task_publish
from sqlalchemy import create_engine, text

from producer.queue import producer_app
from testbed.chaos.duplicates import COUNTS_KEY, install
from testbed.cluster import Cluster, Outcome

DRAIN_S = 240.0


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)


def kill_pool_processes(cluster: Cluster, jobs: int, kills: int) -> Outcome:
    """SIGKILL a pool process in the middle of a stage, ``kills`` times."""
    worker = cluster.start_worker(concurrency=2)
    ids = cluster.submit(jobs)
    faults = 0
    rng = random.Random(0)
    while faults < kills:
        _wait_for(lambda: cluster.running_stages() > 0 and bool(cluster.pool_processes(worker)))
        cluster.fault()
        os.kill(rng.choice(cluster.pool_processes(worker)), signal.SIGKILL)
        faults += 1
        time.sleep(1.0)
    return cluster.check(ids, cluster.drain(ids, DRAIN_S), faults)


def kill_whole_worker(cluster: Cluster, jobs: int, kills: int) -> Outcome:
    """SIGKILL a worker with its pool mid-stage, then start a new one; ``kills`` times."""
    worker = cluster.start_worker(concurrency=2)
    return _kill_and_replace(cluster, worker, cluster.submit(jobs), kills)


def kill_worker_during_a_batch(cluster: Cluster, jobs: int, kills: int) -> Outcome:
    """As ``kill_whole_worker``, the jobs one bulk batch: it completes, each image once."""
    worker = cluster.start_worker(concurrency=2)
    return _kill_and_replace(cluster, worker, cluster.submit_batch(jobs), kills)


def _kill_and_replace(
    cluster: Cluster, worker: subprocess.Popen[bytes], ids: list[str], kills: int
) -> Outcome:
    for _ in range(kills):
        _wait_for(lambda: cluster.running_stages() > 0)
        cluster.fault()
        cluster.kill_worker(worker)
        worker = cluster.start_worker(concurrency=2)
        time.sleep(2.0)
    return cluster.check(ids, cluster.drain(ids, DRAIN_S), kills)


def restart_redis(cluster: Cluster, redis_server: object, jobs: int, down_s: float) -> Outcome:
    """Restart Redis (losing every queued message) and keep it down while jobs are submitted."""
    cluster.start_worker(concurrency=2)
    ids = cluster.submit(jobs // 2, "before")
    _wait_for(lambda: cluster.running_stages() > 0)
    redis_server.stop()  # type: ignore[attr-defined]
    ids += cluster.submit(jobs - jobs // 2, "while down")  # accepted: they wait in the outbox
    time.sleep(down_s)
    redis_server.start()  # type: ignore[attr-defined]
    cluster.fault()  # recovery counts from Redis being back
    return cluster.check(ids, cluster.drain(ids, DRAIN_S), 1)


def terminate_database_connections(
    cluster: Cluster, admin_url: str, jobs: int, rounds: int
) -> Outcome:
    """``pg_terminate_backend`` every connection to the jobs database, ``rounds`` times."""
    cluster.start_worker(concurrency=2)
    ids = cluster.submit(jobs)
    database = cluster.settings.resolved_database_url.rsplit("/", 1)[1]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    killed = 0
    try:
        for _ in range(rounds):
            _wait_for(lambda: cluster.running_stages() > 0)
            cluster.fault()
            with admin.connect() as connection:
                killed += len(
                    connection.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = :db AND pid <> pg_backend_pid()"
                        ),
                        {"db": database},
                    ).all()
                )
            time.sleep(1.5)
    finally:
        admin.dispose()
    outcome = cluster.check(ids, cluster.drain(ids, DRAIN_S), rounds)
    outcome.notes.append(f"{killed} connections terminated")
    return outcome


def duplicate_every_message(cluster: Cluster, jobs: int) -> tuple[Outcome, dict[str, int]]:
    """Publish every stage message twice; returns the outcome and imggen's own publish counts."""
    broker = cluster.settings.resolved_broker_url
    redis.Redis.from_url(broker).delete(COUNTS_KEY)
    handler = install(producer_app(cluster.settings), broker)
    try:
        cluster.start_worker(concurrency=2, include=["testbed.chaos.duplicates"])
        ids = cluster.submit(jobs)
        outcome = cluster.check(ids, cluster.drain(ids, DRAIN_S), jobs * 5)
    finally:
        after_task_publish.disconnect(handler)
    counts = {
        k.decode(): int(v) for k, v in redis.Redis.from_url(broker).hgetall(COUNTS_KEY).items()
    }
    return outcome, counts


def stage_longer_than_visibility_timeout(cluster: Cluster) -> Outcome:
    """A denoise stage that runs past the broker's visibility timeout (set short by the caller)."""
    cluster.start_worker(concurrency=2)
    job = cluster.client.submit("a slow one", n=4, seed=1, steps=150, width=256, height=256)
    return cluster.check([job.id], cluster.drain([job.id], DRAIN_S), 1)


def warm_shutdown_mid_stage(cluster: Cluster) -> Outcome:
    """SIGTERM a worker in the middle of a stage; a second worker must finish the job."""
    first = cluster.start_worker(concurrency=1)
    job = cluster.client.submit("handed back", n=4, seed=1, steps=100, width=128, height=128)

    def denoising() -> bool:
        info = job.info()
        return info["stage"] == "denoise" and (info["progress"]["step"] or 0) >= 2

    _wait_for(denoising)
    cluster.fault()
    first.send_signal(signal.SIGTERM)
    cluster.start_worker(concurrency=1)
    first.wait(60)
    return cluster.check([job.id], cluster.drain([job.id], DRAIN_S), 1)
