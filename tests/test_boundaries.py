"""The import arrows of ARCHITECTURE.md, checked in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return {name.split(".")[0] for name in json.loads(result.stdout.strip().splitlines()[-1])}


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        (
            "import producer, producer.cli, producer.client",
            {"torch", "diffusers", "transformers", "imggen", "worker"},
        ),
        # The CLI entry point must stay usable on a producer-only install.
        ("import worker.cli", {"torch", "diffusers", "transformers", "imggen"}),
        # The queue machinery loads the ML stack only where a stage runs: a sweeper, or a
        # worker between stages, has no torch in memory.
        (
            "import worker.queue.lifecycle, worker.queue.sweeper, worker.queue.leases, "
            "worker.tasks, worker.app",
            {"torch", "diffusers", "transformers", "numpy"},
        ),
        (
            "import imggen, imggen.tiny",
            {"celery", "kombu", "redis", "sqlalchemy", "fastapi", "producer", "worker"},
        ),
    ],
)
def test_import_boundaries(statement: str, forbidden: set[str]) -> None:
    assert _modules_after(statement) & forbidden == set()
