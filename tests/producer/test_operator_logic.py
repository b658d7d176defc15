"""The operator's view, piece by piece: log fields, the stats window, counting after commit,
worker heartbeats and the worker's command line (SQLite, no other service)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from migrations import upgrade
from producer import logs, overview, stats
from producer.db import session_scope
from producer.metrics import JOBS_FINISHED, after_commit
from producer.models import WorkerHeartbeat, utcnow
from worker import heartbeat
from worker.heartbeat import Heartbeat
from worker.process import worker_argv
from worker.settings import WorkerSettings


def _json_records(emit: Callable[[logging.Logger], None]) -> list[dict[str, Any]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logs.use_format("json", [handler])
    logger = logging.getLogger("imggen.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_records_carry_the_work_they_are_about_and_only_inside_it() -> None:
    def emit(logger: logging.Logger) -> None:
        logger.info("before")
        with logs.work(job_id="j1", stage="denoise", attempt=2, lane="bulk", batch_id="b1"):
            logger.info("inside")
            with logs.work(stage="decode"):
                logger.info("nested")
        logger.info("after")

    before, inside, nested, after = _json_records(emit)
    assert before["job_id"] is None and after["job_id"] is None
    assert inside["message"] == "inside" and inside["level"] == "INFO"
    expected = {"job_id": "j1", "stage": "denoise", "attempt": 2, "lane": "bulk", "batch_id": "b1"}
    assert {key: inside[key] for key in logs.FIELDS} == expected
    assert nested["stage"] == "decode" and nested["job_id"] == "j1"
    with pytest.raises(TypeError, match="colour"):
        logs.work(colour="red").__enter__()


def test_log_fields_stay_with_their_thread() -> None:
    def other(logger: logging.Logger) -> None:
        logger.info("other thread")

    def emit(logger: logging.Logger) -> None:
        with logs.work(job_id="mine"):
            thread = threading.Thread(target=other, args=(logger,))
            thread.start()
            thread.join()
            logger.info("this thread")

    records = {r["message"]: r for r in _json_records(emit)}
    assert records["this thread"]["job_id"] == "mine"
    assert records["other thread"]["job_id"] is None


def test_stats_window_is_a_span_or_an_iso_time() -> None:
    now = utcnow()
    assert stats.parse_since("30m", now) == now - timedelta(minutes=30)
    assert stats.parse_since("1.5h", now) == now - timedelta(minutes=90)
    assert stats.parse_since("2d", now) == now - timedelta(days=2)
    assert stats.parse_since("2026-12-01T10:00:00", now).tzinfo is not None
    for bad in ("", "yesterday", "10x", "-5m"):
        with pytest.raises(ValueError, match="not a span"):
            stats.parse_since(bad, now)


def test_a_count_after_commit_is_not_made_by_a_rolled_back_transaction(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'count.db'}"
    upgrade(url)
    counter = JOBS_FINISHED.labels("succeeded", "test-lane")
    start = counter._value.get()
    with session_scope(url) as session:
        after_commit(session, counter.inc)
    assert counter._value.get() == start + 1
    with pytest.raises(RuntimeError), session_scope(url) as session:
        after_commit(session, counter.inc)
        raise RuntimeError("rolled back")
    assert counter._value.get() == start + 1


def test_heartbeats_show_a_worker_alive_with_its_work_then_gone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'beats.db'}"
    upgrade(url)
    settings = WorkerSettings(database_url=url, heartbeat_seconds=0.05)
    beat = Heartbeat(settings, "gpu-1@host", ["imggen.denoise"], lambda: ["sdxl"])
    with heartbeat.running("job-1", "denoise"):
        beat.beat()
    with session_scope(url) as session:
        (worker,) = overview.workers(session)
    assert worker["alive"] and worker["hostname"] == "gpu-1@host"
    assert (worker["current_job_id"], worker["current_stage"]) == ("job-1", "denoise")
    assert worker["models"] == ["sdxl"] and worker["queues"] == ["imggen.denoise"]

    beat.beat()  # idle now: the same row, no job
    with session_scope(url) as session:
        (worker,) = overview.workers(session)
        assert worker["current_job_id"] is None
        later = utcnow() + timedelta(seconds=overview.ALIVE_S + 1)
        assert not overview.workers(session, later)[0]["alive"]

    stop = threading.Event()
    stop.set()
    beat.run_forever(stop)  # one last beat, then the row is removed on a clean stop
    with session_scope(url) as session:
        assert session.scalars(select(WorkerHeartbeat)).all() == []


def test_worker_command_line_sends_events_only_when_asked_and_passes_options_through() -> None:
    quiet = worker_argv()
    assert "--without-heartbeat" in quiet and "--task-events" not in quiet
    loud = worker_argv(events=True, extra=["--max-tasks-per-child=10"])
    assert "--task-events" in loud and "--without-heartbeat" not in loud
    assert loud[-1] == "--max-tasks-per-child=10"


def test_imggen_worker_hands_options_it_does_not_know_to_celery(tmp_path: Path) -> None:
    env = {"IMGGEN_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "worker", "--no-such-celery-option"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Celery itself refuses it: the option reached `celery worker`, not imggen's parser.
    assert result.returncode == 2
    assert "Usage: celery worker" in result.stderr
    assert "No such option '--no-such-celery-option'" in result.stderr


def test_the_api_logs_json_through_uvicorn_when_asked() -> None:
    script = (
        "import logging, logging.config\n"
        "from producer.logs import uvicorn_config, work\n"
        "from uvicorn.config import LOGGING_CONFIG\n"
        "assert uvicorn_config('plain') is LOGGING_CONFIG\n"
        "logging.config.dictConfig(uvicorn_config('json'))\n"
        "logging.getLogger('uvicorn.access').info('GET /healthz')\n"
        "with work(job_id='j9'):\n"
        "    logging.getLogger('producer.client').warning('from imggen')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (result.stdout + result.stderr).splitlines()]
    by_logger = {line["logger"]: line for line in lines}
    assert by_logger["uvicorn.access"]["message"] == "GET /healthz"
    assert by_logger["producer.client"]["job_id"] == "j9"
