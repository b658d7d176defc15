"""Fixtures of the producer tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.producer.api_app import Api


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[Api]:
    yield Api(tmp_path)
