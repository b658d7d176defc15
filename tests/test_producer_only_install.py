"""A producer-only install (``pip install imggen``, no extras) in a venv of its own: no torch,
a submission reaches Redis with no worker running (kombu's Redis transport needs `packaging`,
which nothing else pulls in), and ``imggen sweeper`` runs there."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from testbed.services import RedisServer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

SUBMIT = textwrap.dedent(
    """
    import importlib.util, sys
    import redis
    from migrations import upgrade
    from producer import Client
    from producer.settings import Settings

    home, broker = sys.argv[1], sys.argv[2]
    settings = Settings(home=home, broker_url=broker)
    upgrade(settings.resolved_database_url)
    job = Client(settings).submit("a red fox", width=64, height=64)
    assert redis.Redis.from_url(broker).llen("imggen.expand") == 1, "no message in the queue"
    assert all(importlib.util.find_spec(m) is None for m in ("torch", "diffusers", "numpy"))
    print(job.id)
    """
)


def test_a_producer_only_install_submits_to_redis_without_a_worker(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    installed = subprocess.run(
        [python, "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    broker = redis_server.url.rsplit("/", 1)[0] + "/3"  # a database no other test uses
    done = subprocess.run(
        [python, "-c", SUBMIT, str(tmp_path / "home"), broker],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the checkout: the installed package is what runs
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and len(done.stdout.strip()) == 32

    # The sweeper relays the outbox and bounds the caches without the ML stack.
    env = os.environ | {"IMGGEN_HOME": str(tmp_path / "home"), "IMGGEN_BROKER_URL": broker}
    swept = subprocess.run(
        [str(venv / "bin" / "imggen"), "sweeper", "--once"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert swept.returncode == 0, swept.stderr[-3000:]
    assert "SweepReport" in swept.stdout and "webhooks delivered: 0" in swept.stdout
