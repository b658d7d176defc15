"""The chaos suite, reduced for CI: faults under load, then the promise is checked.

``python -m bench.chaos`` runs the same scenarios at full size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.chaos import scenarios
from testbed.cluster import Cluster
from testbed.hog import saturated_cpu
from testbed.services import POSTGRES_ADMIN_URL, RedisServer
from tests.conftest import postgres_database

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture()
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own: scenarios stop and restart it."""
    if __import__("shutil").which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def cluster_factory(tmp_path: Path, tiny_model_dir: Path, redis_server: RedisServer) -> Iterator:  # type: ignore[type-arg]
    clusters: list[Cluster] = []
    with postgres_database() as database_url:

        def make(**extra: str) -> Cluster:
            cluster = Cluster(
                tmp_path / f"c{len(clusters)}",
                tiny_model_dir,
                database_url,
                redis_server.url,
                **extra,
            )
            clusters.append(cluster)
            return cluster

        yield make
        for cluster in clusters:
            cluster.stop()


def test_killing_pool_processes_mid_stage(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    outcome = scenarios.kill_pool_processes(cluster_factory(), jobs=30, kills=4)
    outcome.assert_clean()


def test_killing_the_whole_worker(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cluster = cluster_factory()
    outcome = scenarios.kill_whole_worker(cluster, jobs=20, kills=2)
    outcome.assert_clean()
    # The last worker took over the stage its killed predecessor held, and its metrics say so.
    assert cluster.metric(cluster.workers[-1], "imggen_lease_takeovers_total") >= 1


def test_killing_the_worker_during_a_batch(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    outcome = scenarios.kill_worker_during_a_batch(cluster_factory(), jobs=40, kills=2)
    outcome.assert_clean()


def test_redis_restart_and_outage_during_submissions(
    cluster_factory, redis_server: RedisServer
) -> None:  # type: ignore[no-untyped-def]
    outcome = scenarios.restart_redis(cluster_factory(), redis_server, jobs=20, down_s=3)
    outcome.assert_clean()


def test_database_connections_killed_mid_load(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    outcome = scenarios.terminate_database_connections(
        cluster_factory(), POSTGRES_ADMIN_URL, jobs=20, rounds=3
    )
    outcome.assert_clean()


@pytest.mark.parametrize("chain", ["true", "false"])
def test_every_message_delivered_twice(cluster_factory, chain: str) -> None:  # type: ignore[no-untyped-def]
    cluster = cluster_factory(chain_stages=chain)
    outcome, publishes = scenarios.duplicate_every_message(cluster, jobs=10)
    outcome.assert_clean()
    # imggen itself sent each message once. Unchained, every stage of every job is a message;
    # chained, each job's first stage is, and its batched denoise mostly, but not what follows
    # a batch: its jobs chain on to decode in the process that denoised them.
    assert set(publishes.values()) == {1}, publishes
    stages = [task_id.rsplit("-", 2)[1] for task_id in publishes]
    if chain == "false":
        assert len(publishes) == 10 * 5, publishes
    else:
        assert stages.count("expand") == 10 and stages.count("encode") == 0, publishes
        assert stages.count("decode") == 0, publishes


def test_a_stage_longer_than_the_visibility_timeout_runs_once(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cluster = cluster_factory(broker_visibility_timeout_seconds="2")
    outcome = scenarios.stage_longer_than_visibility_timeout(cluster)
    outcome.assert_clean()
    # Redelivered while running, it was fenced off by the lease: one attempt, not two.
    stages = cluster.client.view(cluster_job_id(cluster))["stages"]
    assert all(stage["attempts"] == 1 for stage in stages), stages


def test_warm_shutdown_hands_the_stage_back(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cluster = cluster_factory(worker_soft_shutdown_seconds="1")
    outcome = scenarios.warm_shutdown_mid_stage(cluster)
    outcome.assert_clean()
    denoise = next(
        s for s in cluster.client.view(cluster_job_id(cluster))["stages"] if s["stage"] == "denoise"
    )
    assert denoise["attempts"] == 2, denoise  # stopped on the first worker, finished on the second


def cluster_job_id(cluster: Cluster) -> str:
    from sqlalchemy import select

    from producer.db import in_transaction
    from producer.models import Job

    return str(
        in_transaction(cluster.settings.resolved_database_url, lambda s: s.scalar(select(Job.id)))
    )


def test_a_worker_that_stops_consuming_restarts_itself(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    """celery#8030: after a Redis reconnect a worker can sit idle beside waiting messages.
    Here its consumers are cancelled by remote control, which leaves it in that state."""
    from producer.pipeline import ALL_QUEUES
    from producer.queue import producer_app

    cluster = cluster_factory(stall_after_seconds="3")
    cluster.start_worker(concurrency=1)
    first = cluster.submit(1, "warm-up")
    assert cluster.drain(first, 120) < 120
    control = producer_app(cluster.settings).control
    for queue in ALL_QUEUES:
        control.cancel_consumer(queue, reply=True, timeout=5)
    stalled = cluster.submit(2, "while stalled")
    outcome = cluster.check(stalled, cluster.drain(stalled, 120))
    outcome.assert_clean()


# With the CPU saturated (a busy loop per core beside the workers): nothing is lost, and each
# fault is recovered from (a stage finishes after it).


def test_killing_the_whole_worker_with_the_cpu_saturated(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    with saturated_cpu():
        outcome = scenarios.kill_whole_worker(cluster_factory(), jobs=8, kills=1)
    outcome.assert_clean()
    assert outcome.recovery_s and outcome.slowest_recovery_s is not None, outcome


def test_a_redis_restart_with_the_cpu_saturated(cluster_factory, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    with saturated_cpu():
        outcome = scenarios.restart_redis(cluster_factory(), redis_server, jobs=8, down_s=2)
    outcome.assert_clean()
    assert outcome.recovery_s and outcome.slowest_recovery_s is not None, outcome
