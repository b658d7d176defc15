"""Property-based fuzzing of the HTTP API from its own OpenAPI spec (schemathesis): no 5xx."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from migrations import upgrade
from producer.api import create_app
from producer.db import session_scope
from producer.keys import create_key
from producer.settings import Settings

pytestmark = pytest.mark.filterwarnings("ignore")


def _app(home: Path) -> tuple[object, str, str]:
    # No worker runs: a request that waits for its job (OpenAI, A1111) answers at once with it.
    config = Settings(
        home=home,
        api_submissions_per_minute=10_000,
        api_max_in_flight=10_000,
        api_wait_seconds=0.01,
    )
    upgrade(config.resolved_database_url)
    with session_scope(config.resolved_database_url) as session:
        _, key = create_key(session, "fuzz")
        _, admin = create_key(session, "fuzz-admin", admin=True)
    return create_app(config), key, admin


_home = Path(__import__("tempfile").mkdtemp(prefix="imggen-fuzz-"))
APP, KEY, ADMIN_KEY = _app(_home)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    if case.path.endswith("/events"):
        pytest.skip("an event stream stays open until its job ends")
    key = ADMIN_KEY if case.path.startswith("/v1/admin/") else KEY  # else they answer 403
    response = case.call(headers={"Authorization": f"Bearer {key}"})
    if response.status_code == 504:
        # Accepted, and still running when the request stopped waiting: the answer names the job.
        body = response.json()
        assert body.get("job_id") or body["error"]["job_id"], response.text  # A1111 or OpenAI
        return
    assert response.status_code < 500, (
        case.method,
        case.path,
        response.status_code,
        response.text[:500],
    )
