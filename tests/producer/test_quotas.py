"""Quotas that hold under concurrency, refused submissions that use up nothing, and an API that
keeps accepting jobs while Redis is down."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from testbed.services import free_port
from tests.producer.api_app import SMALL, Api


def _concurrent_posts(api: Api, count: int) -> list[int]:
    codes: list[int] = []
    barrier = threading.Barrier(count)

    def post() -> None:
        with TestClient(api.http.app) as http:
            barrier.wait()
            codes.append(http.post("/v1/jobs", json=SMALL, headers=api.key).status_code)

    threads = [threading.Thread(target=post) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return codes


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_in_flight_limit_holds_under_concurrent_submissions(
    tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    extra: dict[str, Any] = {}
    if database == "postgresql":
        extra["database_url"] = request.getfixturevalue("postgres_url")
    api = Api(tmp_path, api_max_in_flight=3, api_submissions_per_minute=1000, **extra)
    codes = _concurrent_posts(api, 30)
    assert sorted(codes) == [202] * 3 + [429] * 27
    assert api.jobs_in_db() == 3


def test_refused_submissions_use_up_no_rate_quota(tmp_path: Path, redis_url: str) -> None:
    api = Api(tmp_path, api_submissions_per_minute=2, redis_url=redis_url)
    for _ in range(5):
        assert api.submit(SMALL | {"steps": 0}).status_code == 422
    assert [api.submit().status_code for _ in range(3)] == [202, 202, 429]


def test_with_redis_down_the_api_still_accepts_and_follows_jobs(tmp_path: Path) -> None:
    api = Api(tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0", api_wait_seconds=1.0)
    response = api.submit()
    assert response.status_code == 202, response.text
    job = response.json()
    assert api.http.delete(f"/v1/jobs/{job['id']}", headers=api.key).status_code == 200
    with api.http.stream("GET", f"/v1/jobs/{job['id']}/events", headers=api.key) as stream:
        assert "event: end" in stream.read().decode()
    waited = api.http.post("/v1/images/generations", json={"prompt": "a red fox"}, headers=api.key)
    assert waited.status_code == 504 and waited.json()["error"]["job_id"]
