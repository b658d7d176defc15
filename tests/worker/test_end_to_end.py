"""Jobs through real Celery worker processes, on the embedded default and on Redis + PostgreSQL."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from producer.db import session_scope
from producer.errors import InvalidJobSpec, JobFailed
from producer.models import Image, Job, Metric
from testbed.deployments import Deployment, embedded, make_deployment, with_worker
from testbed.services import RedisServer
from tests.conftest import postgres_database

pytestmark = pytest.mark.slow
WAIT_S = 180.0
SMALL: dict[str, Any] = {"n": 2, "seed": 7, "steps": 4, "width": 64, "height": 64}


@pytest.fixture(scope="module", params=["embedded", "redis+postgresql"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[Deployment]:
    home = tmp_path_factory.mktemp(request.param.replace("+", "-"))
    if request.param == "embedded":
        yield from with_worker(embedded(request.param, home, tiny_model_dir))
        return
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    with postgres_database() as database_url:
        dep = make_deployment(request.param, home, tiny_model_dir, database_url, redis_server.url)
        yield from with_worker(dep)


def test_a_job_runs_every_stage_and_persists_images_and_metrics(deployment: Deployment) -> None:
    handle = deployment.client.submit("a red fox", **SMALL)
    info = handle.wait(timeout=WAIT_S)

    assert info["status"] == "succeeded", info
    assert [(s["stage"], s["status"], s["attempts"]) for s in info["stages"]] == [
        (stage, "succeeded", 1) for stage in ("expand", "encode", "denoise", "decode", "score")
    ]
    assert info["expanded_prompt"] == "a red fox"
    # No CLIP model in this deployment: the metric is skipped, and the job says so.
    notes = [note for stage in info["stages"] for note in stage["notes"]]
    assert any("clip_score skipped" in note for note in notes)
    assert [image["seed"] for image in info["images"]] == [7, 8]
    for image in info["images"]:
        assert Path(image["uri"]).read_bytes().startswith(b"\x89PNG")
        assert set(image["metrics"]) == {"sharpness", "contrast", "colorfulness", "entropy"}
    assert handle.result()["id"] == handle.id
    with session_scope(deployment.settings.resolved_database_url) as session:
        assert (
            session.scalar(select(func.count()).select_from(Image).where(Image.job_id == handle.id))
            == 2
        )
        metric_rows = (
            select(func.count()).select_from(Metric).join(Image).where(Image.job_id == handle.id)
        )
        assert session.scalar(metric_rows) == 8


def test_the_same_spec_draws_the_same_images(deployment: Deployment) -> None:
    first = deployment.client.submit("a lighthouse", **SMALL)
    second = deployment.client.submit("a lighthouse", **SMALL)
    images = [
        [Path(i["uri"]).read_bytes() for i in handle.wait(timeout=WAIT_S)["images"]]
        for handle in (first, second)
    ]
    assert images[0] == images[1]
    assert images[0][0] != images[0][1]  # seeds 7 and 8


def test_a_bad_spec_writes_nothing_and_sends_nothing(deployment: Deployment) -> None:
    with session_scope(deployment.settings.resolved_database_url) as session:
        jobs_before = session.scalar(select(func.count()).select_from(Job))
    for bad in ({"width": 63}, {"steps": 0}, {"n": 100}, {"prompt": ""}):
        fields = SMALL | {"prompt": "a fox"} | bad
        with pytest.raises(InvalidJobSpec) as caught:
            deployment.client.submit(**fields)
        assert set(caught.value.errors) == set(bad)
    with session_scope(deployment.settings.resolved_database_url) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == jobs_before
    assert deployment.queued_messages() == 0


def test_a_job_naming_a_model_not_served_is_refused_at_submit(deployment: Deployment) -> None:
    for model in ("no-such-model", "/etc", str(deployment.settings.resolved_models_dir)):
        with pytest.raises(InvalidJobSpec) as refused:
            deployment.client.submit("a fox", **SMALL, model=model)
        assert list(refused.value.errors) == ["model"] and model not in str(refused.value)


def test_a_model_folder_that_breaks_after_submit_fails_at_once_with_the_reason(
    deployment: Deployment, tiny_model_dir: Path
) -> None:
    folder = deployment.settings.resolved_models_dir / "goes-missing"
    shutil.copytree(tiny_model_dir, folder)
    deployment.registered("goes-missing")
    handle = deployment.client.submit("a fox", **SMALL, model="goes-missing")
    shutil.rmtree(folder / "unet")
    info = handle.wait(timeout=WAIT_S)
    assert info["status"] == "failed"
    encode = next(s for s in info["stages"] if s["stage"] == "encode")
    assert (encode["status"], encode["attempts"], encode["error_kind"]) == ("failed", 1, "invalid")
    assert "unet" in info["error"]
    with pytest.raises(JobFailed, match="failed"):
        handle.result()


def test_a_folder_the_workers_cannot_run_is_refused_at_submit_with_the_reason(
    deployment: Deployment, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A UNet that wants conditioning its pipeline does not give (an SDXL UNet in a Stable
    Diffusion folder): the worker registers it as refused, and a job for it never starts."""
    folder = deployment.settings.resolved_models_dir / "wants-more"
    made = shutil.copytree(tiny_model_dir, tmp_path / "wants-more")
    config = json.loads((made / "unet" / "config.json").read_text())
    config |= {"addition_embed_type": "text_time", "addition_time_embed_dim": 8}
    (made / "unet" / "config.json").write_text(json.dumps(config))
    made.rename(folder)  # whole, as the worker's rescan sees it
    assert deployment.registered("wants-more").refused is not None
    with pytest.raises(InvalidJobSpec) as refused:
        deployment.client.submit("a fox", **SMALL, model="wants-more")
    assert "added conditioning (text_time)" in refused.value.errors["model"]
    assert str(folder) not in str(refused.value)


def test_cancel_stops_a_running_job_and_a_queued_one_never_starts(deployment: Deployment) -> None:
    client = deployment.client
    running = client.submit("a long one", n=8, seed=1, steps=150, width=256, height=256)
    queued = client.submit("behind it", **SMALL)

    def in_denoise(info: dict[str, Any]) -> None:
        if info["stage"] == "denoise" and (info["progress"]["step"] or 0) >= 2:
            raise _Ready

    with pytest.raises(_Ready):
        running.wait(timeout=WAIT_S, poll_interval=0.05, on_progress=in_denoise)
    assert queued.cancel() and running.cancel()
    assert not running.cancel()  # a second cancel finds it ended

    after = running.wait(timeout=WAIT_S)
    assert after["status"] == "canceled" and after["images"] == []
    denoise = next(s for s in after["stages"] if s["stage"] == "denoise")
    assert denoise["status"] != "succeeded"
    # Its unfinished stages end canceled: not retried, not a failure.
    assert (denoise["status"], denoise["attempts"], denoise["error_kind"]) == ("canceled", 1, None)
    assert [s["status"] for s in after["stages"][2:]] == ["canceled"] * 3
    # The next job in line runs, so the worker has moved past the canceled ones.
    assert client.submit("after", **SMALL).wait(timeout=WAIT_S)["status"] == "succeeded"
    never = queued.info()
    assert never["status"] == "canceled"
    assert all(stage["attempts"] == 0 for stage in never["stages"])
    assert {stage["status"] for stage in never["stages"]} == {"canceled"}


class _Ready(Exception):
    pass


def test_cli_submit_wait_status_cancel(deployment: Deployment) -> None:
    done = deployment.cli(
        "submit",
        "a red fox",
        "--n",
        "2",
        "--seed",
        "7",
        "--steps",
        "4",
        "--size",
        "64x64",
        "--wait",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded" and job["id"]
    assert len(job["images"]) == 2
    assert all({"uri", "metrics"} <= set(image) for image in job["images"])
    assert all(image["metrics"]["entropy"] > 0 for image in job["images"])

    queued = deployment.cli(
        "submit", "a blue fox", "--steps", "4", "--size", "64x64", "--scheduler", "euler_a"
    )
    assert queued.returncode == 0, queued.stderr
    job_id = queued.stdout.strip()
    assert len(job_id) == 32
    waited = deployment.cli("wait", job_id, "--json", "--timeout", str(WAIT_S))
    assert waited.returncode == 0 and json.loads(waited.stdout)["status"] == "succeeded"
    assert json.loads(waited.stdout)["spec"]["scheduler"] == "euler_a"
    status = deployment.cli("status", job_id)
    assert status.returncode == 0 and "succeeded" in status.stdout
    assert "already ended" in deployment.cli("cancel", job_id).stdout

    bad = deployment.cli("submit", "a fox", "--size", "63x64")
    assert bad.returncode == 2 and "width" in bad.stderr
    bad = deployment.cli("submit", "a fox", "--scheduler", "heun")
    assert bad.returncode == 2 and "scheduler" in bad.stderr
    unknown = deployment.cli("status", "0" * 32)
    assert unknown.returncode == 1 and "no job" in unknown.stderr


class _Exploit:
    """Unpickling this runs a shell command: what a pickle message injected into a queue does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_pickle_message_injected_into_a_queue_is_refused(
    deployment: Deployment, tmp_path: Path
) -> None:
    from producer.pipeline import queue_name, task_name
    from producer.queue import producer_app

    marker = tmp_path / "pwned"
    producer_app(deployment.settings).send_task(
        task_name("expand"),
        args=[_Exploit(marker)],
        queue=queue_name("expand"),
        serializer="pickle",
    )
    # A job sent after it succeeds, so the worker has been past the injected message.
    assert (
        deployment.client.submit("after the attack", **SMALL).wait(timeout=WAIT_S)["status"]
        == "succeeded"
    )
    assert not marker.exists()
    assert deployment.queued_messages() == 0
