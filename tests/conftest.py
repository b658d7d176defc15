"""Shared fixtures: the tiny model, private Redis and PostgreSQL databases, worker processes.

Tests that need Redis or PostgreSQL skip when they are missing, unless
``IMGGEN_TEST_REQUIRE_SERVICES=1`` (set by CI), which turns a missing service into a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest

from testbed import services
from testbed.services import RedisServer

# No test may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _missing(service: str, why: str) -> NoReturn:
    if os.environ.get("IMGGEN_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{service} is required (IMGGEN_TEST_REQUIRE_SERVICES=1) but {why}")
    pytest.skip(f"{service} not available: {why}")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from imggen.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        _missing("Redis", "redis-server is not on PATH")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    import redis

    yield redis_server.url
    redis.Redis.from_url(redis_server.url).flushall()


@pytest.fixture()
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with postgres_database() as url:
        yield url


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database (see testbed.services); skips or fails the test without one."""
    with services.postgres_database(on_missing=_missing) as url:
        yield url
