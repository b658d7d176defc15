"""Random command lines through the real ``imggen`` CLI (in-process, on the embedded default):
every one ends in a result or a one-line error with exit code 2, never a raw exception, and a
refused submission writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from typer.testing import CliRunner

from migrations import upgrade
from producer.db import session_scope
from producer.models import Job
from producer.settings import get_settings
from worker.cli import app

anything = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from(["0", "-1", "9" * 30, "64x64", "63x64", "0x0", "1e9", "nan", "x", "\x00"]),
)
OPTIONS = ["--n", "--seed", "--steps", "--size", "--guidance", "--model", "--scheduler"]
OPTIONS += ["--strength", "--keep-best", "--by", "--negative"]
command_lines = st.lists(st.tuples(st.sampled_from(OPTIONS), anything), max_size=4).map(
    lambda pairs: [part for pair in pairs for part in pair]
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("cli-props")
    patch = pytest.MonkeyPatch()
    patch.setenv("IMGGEN_HOME", str(home))
    get_settings.cache_clear()
    upgrade(get_settings().resolved_database_url)
    yield home
    patch.undo()
    get_settings.cache_clear()


def _jobs() -> int:
    with session_scope(get_settings().resolved_database_url) as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(prompt=anything, options=command_lines)
def test_random_submit_command_lines_never_raise(
    home: Path, prompt: str, options: list[str]
) -> None:
    before = _jobs()
    result = CliRunner().invoke(app, ["submit", prompt, *options])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        options,
        result.output,
    )
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 2), (options, result.exit_code, result.output)
    assert _jobs() == before + (1 if result.exit_code == 0 else 0)
