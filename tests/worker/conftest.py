"""The API stack that end-to-end tests over HTTP share: one worker process and one API process
over Redis and PostgreSQL, started once a session (each client gets its own keys)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from migrations import upgrade
from testbed.deployments import Deployment, make_deployment, with_worker
from testbed.services import RedisServer, free_port
from tests.conftest import postgres_database

WEBHOOK_SECRET = "webhook-secret-for-tests"


@pytest.fixture(scope="session")
def api_stack(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
    redis_server: RedisServer,  # not used: it fails or skips where redis-server is missing
) -> Iterator[tuple[Deployment, str]]:
    home = tmp_path_factory.mktemp("api-stack")
    # A Redis of its own: other tests flush the shared one between tests, which would drop
    # kombu's queue bindings under this long-lived worker.
    redis = RedisServer(tmp_path_factory.mktemp("api-stack-redis"))
    redis.start()
    with postgres_database() as database_url:
        dep = make_deployment(
            "api",
            home,
            tiny_model_dir,
            database_url,
            redis.url,
            webhook_secret=WEBHOOK_SECRET,
            # The tests' webhook receivers listen on the loopback, which is otherwise refused.
            webhook_allowed_hosts='["127.0.0.1"]',
            sweep_interval_seconds="0.3",
            # What operators see (tests/worker/test_operator_view.py): worker metrics, frequent
            # heartbeats, JSON logs in a file the tests read.
            metrics_port=str(free_port()),
            heartbeat_seconds="0.5",
            log_format="json",
        )
        log = (home / "worker.log").open("wb")
        for running in with_worker(dep, log=log, loglevel="INFO"):
            port = free_port()
            api = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "api", "--port", str(port)],
                env=dep.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            base = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        if httpx.get(f"{base}/healthz").status_code == 200:
                            break
                    except httpx.TransportError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
                yield running, base
            finally:
                api.terminate()
                api.wait(10)
        log.close()
    redis.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database for one test, SQLite and PostgreSQL in turn."""
    url = (
        f"sqlite:///{tmp_path / 'queue.db'}"
        if request.param == "sqlite"
        else str(request.getfixturevalue("postgres_url"))
    )
    upgrade(url)
    return url
