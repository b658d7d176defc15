"""docker-compose.yml is valid (checked with `docker-compose config`; no engine is needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_compose_file_is_valid_and_wires_the_services() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed")
    result = subprocess.run(
        [binary, "config"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    config = result.stdout
    for expected in (
        "redis:",
        "postgres:",
        "migrate:",
        "worker:",
        "IMGGEN_BROKER_URL: redis://redis:6379/0",
        "driver: nvidia",
        "service_completed_successfully",
        # The API and the workers share the artifacts volume; workers serve metrics, are
        # health-checked, and Prometheus scrapes both.
        "api:",
        "artifacts:/data/artifacts",
        "IMGGEN_METRICS_PORT: '9808'",
        "inspect ping",
        "prometheus:",
        "/healthz",
    ):
        assert expected in config
    assert config.count("artifacts:/data/artifacts") >= 2, "the artifacts volume is not shared"
