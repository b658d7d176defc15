"""The CLI with its database unreachable: one line that names it, and an exit code, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

from testbed.services import free_port


def test_an_unreachable_database_is_one_line_and_exit_code_3() -> None:
    env = dict(os.environ) | {
        "IMGGEN_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x",
        "IMGGEN_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    for args in (["status", "0" * 32], ["submit", "a red fox", "--size", "64x64"]):
        done = subprocess.run(
            [sys.executable, "-m", "worker.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 3, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "database is unreachable" in lines[0], done.stderr
        assert "Traceback" not in done.stderr and "127.0.0.1" in lines[0]
