"""Random specs at the producer edge: never a crash, every rejection names its fields, and a
rejected spec leaves no row and no message behind."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, inspect, select, text

from migrations import upgrade
from producer.client import Client
from producer.db import session_scope
from producer.errors import InvalidJobSpec
from producer.models import Job
from producer.settings import Settings
from producer.spec import MAX_IMAGES, MAX_SEED, MAX_SIDE, MIN_SIDE, JobSpec, validate_spec

FIELDS = list(JobSpec.model_fields) + ["colour", "width ", ""]
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    # Any code point, NULs and lone surrogates included: text a database cannot store.
    st.text(st.characters(blacklist_categories=()), max_size=30),
    st.sampled_from(["a \x00 fox", "a \ud800 fox", "\x00"]),
    st.text(min_size=990, max_size=1010),
    st.lists(st.integers(), max_size=3),
    st.sampled_from([64, 512, 63, 0, 1, 8, 150, 151, "64", "x"]),
)
specs = st.dictionaries(st.sampled_from(FIELDS), values, max_size=8)


def _check(data: dict[str, Any]) -> JobSpec | None:
    try:
        spec = validate_spec(data)
    except InvalidJobSpec as exc:
        assert exc.errors, "a rejection must name at least one field"
        # Every named field is one the caller sent (or the prompt they left out); a list's
        # entries are named within it (loras.0.name).
        named = {field.split(".")[0] for field in exc.errors}
        assert named <= set(data) | {"prompt"}, (exc.errors, data)
        assert all(reason for reason in exc.errors.values())
        return None
    assert spec.prompt is None or 0 < len(spec.prompt) <= 1000
    assert MIN_SIDE <= spec.width <= MAX_SIDE and spec.width % 8 == 0
    assert MIN_SIDE <= spec.height <= MAX_SIDE and spec.height % 8 == 0
    assert 1 <= spec.n <= MAX_IMAGES and 0 <= spec.seed <= MAX_SEED
    return spec


@settings(max_examples=6000, deadline=None)
@given(specs)
def test_random_specs_are_accepted_within_limits_or_rejected_by_name(data: dict[str, Any]) -> None:
    _check(data)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Client:
    home = tmp_path_factory.mktemp("props")
    client = Client(Settings(home=home))
    upgrade(client.settings.resolved_database_url)
    return client


def _counts(client: Client) -> tuple[int, int]:
    with session_scope(client.settings.resolved_database_url) as session:
        jobs = int(session.scalar(select(func.count()).select_from(Job)) or 0)
    broker = create_engine(client.settings.resolved_broker_url.removeprefix("sqla+"))
    try:
        if "kombu_message" not in inspect(broker).get_table_names():
            return jobs, 0
        with broker.connect() as connection:
            return jobs, int(
                connection.execute(text("SELECT count(*) FROM kombu_message")).scalar_one()
            )
    finally:
        broker.dispose()


@settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(specs)
def test_rejected_submissions_write_and_send_nothing(client: Client, data: dict[str, Any]) -> None:
    before = _counts(client)
    expected_valid = _check(dict(data)) is not None
    try:
        client.submit(**{k: v for k, v in data.items() if k != "has_input_image"})
    except InvalidJobSpec:
        assert _counts(client) == before
        return
    except TypeError:
        # Keywords that are not identifiers ("", "width ") cannot be passed as arguments at all.
        assert any(not key.isidentifier() for key in data)
        assert _counts(client) == before
        return
    assert expected_valid or data.get("has_input_image")
    jobs, messages = _counts(client)
    assert (jobs, messages) == (before[0] + 1, before[1] + 1)
