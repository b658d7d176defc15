"""Deployments for end-to-end tests: settings, environment and a real Celery worker process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy import create_engine, inspect, text

from migrations import upgrade
from producer.client import Client
from producer.db import in_transaction
from producer.pipeline import ALL_QUEUES
from producer.queue import carries_events
from producer.registry import Registered, registered
from worker.process import start_worker, stop_worker
from worker.settings import WorkerSettings


@dataclass
class Deployment:
    name: str
    settings: WorkerSettings
    env: dict[str, str]

    @property
    def client(self) -> Client:
        return Client(self.settings)

    def cli(self, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        """Run the ``imggen`` CLI against this deployment."""
        command = [sys.executable, "-m", "worker.cli", *args]
        return subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def registered(self, model: str, timeout: float = 30.0) -> Registered:
        """The model's registry entry once the worker has registered it (it rescans its models
        folder on each heartbeat)."""
        deadline = time.monotonic() + timeout
        while True:
            entry = in_transaction(self.settings.resolved_database_url, registered).get(model)
            if entry is not None:
                return entry
            if time.monotonic() > deadline:
                raise TimeoutError(f"no worker registered {model}")
            time.sleep(0.1)

    def queued_messages(self) -> int:
        """Messages waiting in any stage queue of the broker."""
        url = self.settings.resolved_broker_url
        if url.startswith("redis://"):
            import redis

            connection = redis.Redis.from_url(url)
            return sum(int(connection.llen(queue)) for queue in ALL_QUEUES)
        engine = create_engine(url.removeprefix("sqla+"))
        try:
            if "kombu_message" not in inspect(engine).get_table_names():
                return 0
            with engine.connect() as connection:
                query = text("SELECT count(*) FROM kombu_message WHERE visible")
                return int(connection.execute(query).scalar_one())
        finally:
            engine.dispose()


def make_deployment(
    name: str, home: Path, model: Path, database_url: str, broker_url: str, **extra: str
) -> Deployment:
    values = {
        "home": str(home),
        "database_url": database_url,
        "broker_url": broker_url,
        "artifacts_url": str(home / "artifacts"),
        "model": str(model),
        "broker_polling_interval": "0.05",
        **extra,
    }
    env = dict(os.environ) | {f"IMGGEN_{k.upper()}": v for k, v in values.items()}
    # The environment carries JSON for structured settings; the Settings object wants values.
    parsed = {k: json.loads(v) if v.startswith("[") else v for k, v in values.items()}
    return Deployment(name, WorkerSettings.model_validate(parsed), env)


def embedded(name: str, home: Path, model: Path, **extra: str) -> Deployment:
    """SQLite database and Celery over SQLite: the default that needs nothing installed."""
    database, broker = f"sqlite:///{home / 'imggen.db'}", f"sqla+sqlite:///{home / 'broker.db'}"
    return make_deployment(name, home, model, database, broker, **extra)


def with_worker(
    dep: Deployment, log: IO[bytes] | None = None, loglevel: str = "WARNING"
) -> Iterator[Deployment]:
    """Migrate the database, run one worker process for as long as the caller needs it. It
    sends task events where the broker carries them, as ``imggen worker`` does."""
    upgrade(dep.settings.resolved_database_url)
    events = dep.settings.task_events and carries_events(dep.settings)
    process = start_worker(
        env=dep.env, log=log, loglevel=loglevel, hostname=f"test-{dep.name}@%h", events=events
    )
    try:
        yield dep
    finally:
        stop_worker(process)
