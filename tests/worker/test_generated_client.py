"""The HTTP contract as a client generated from it sees it: `openapi-python-client` builds a
client from the checked-in openapi.json, which then submits, follows and downloads a job over
the live API and worker (the shared ``api_stack``) with nothing but the generated code."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from producer.db import session_scope
from producer.keys import create_key
from testbed.deployments import Deployment

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    tool = shutil.which("openapi-python-client") or str(
        Path(sys.executable).with_name("openapi-python-client")
    )
    out = tmp_path_factory.mktemp("generated")
    done = subprocess.run(
        [
            tool,
            "generate",
            "--path",
            str(ROOT / "openapi.json"),
            "--meta",
            "none",
            "--output-path",
            str(out / "imggen_generated"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("imggen_generated")
    finally:
        sys.path.remove(str(out))


def test_a_generated_client_submits_follows_and_downloads(
    generated: ModuleType, api_stack: tuple[Deployment, str]
) -> None:
    dep, base = api_stack
    with session_scope(dep.settings.resolved_database_url) as session:
        _, key = create_key(session, "generated")
    submit = importlib.import_module("imggen_generated.api.jobs.submit_job_v1_jobs_post")
    get_job = importlib.import_module("imggen_generated.api.jobs.get_job_v1_jobs_job_id_get")
    get_image = importlib.import_module(
        "imggen_generated.api.jobs.get_image_v1_jobs_job_id_images_index_get"
    )
    models = importlib.import_module("imggen_generated.models")
    client = generated.AuthenticatedClient(base_url=base, token=key)

    # Left at the schema's defaults, the size is the model's own (64x64), not 512x512.
    body = models.SubmitJobV1JobsPostJsonBody(prompt="a red fox", n=2, steps=4, seed=3)
    job = submit.sync(client=client, body=body)
    assert isinstance(job, models.JobView), job
    assert (job.spec["width"], job.spec["height"]) == (64, 64)
    deadline = time.monotonic() + 120
    while job.status not in ("succeeded", "failed", "canceled") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = get_job.sync(job_id=job.id, client=client)
    assert job.status == "succeeded" and len(job.images) == 2
    png = get_image.sync_detailed(job_id=job.id, index=1, client=client)
    stored = Path(dep.settings.resolved_artifacts_url) / job.images[1].uri
    assert png.status_code == 200 and png.content == stored.read_bytes()

    # A refusal parses as the schema says: named fields (422), a reason (404).
    refused = submit.sync(client=client, body=models.SubmitJobV1JobsPostJsonBody(steps=0))
    assert isinstance(refused, models.FieldErrors)
    assert {tuple(error.loc) for error in refused.detail} == {("body", "steps"), ("body", "prompt")}
    missing = get_job.sync(job_id="0" * 32, client=client)
    assert isinstance(missing, models.Refusal) and "no job" in missing.detail
