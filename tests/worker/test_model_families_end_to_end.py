"""Model families through the shared API stack (a real worker, Redis, PostgreSQL): an SDXL job
runs every stage as an SD job does, and a folder of a family imggen does not run fails its job
as invalid at once, with the pipeline class in the reason, never as a retry."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from imggen.tiny import make_tiny_sdxl
from producer.db import session_scope
from producer.keys import create_key
from testbed.deployments import Deployment

pytestmark = pytest.mark.slow


def _finished(base: str, auth: dict[str, str], job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = httpx.get(f"{base}/v1/jobs/{job_id}", headers=auth).json()
        if view["status"] in ("succeeded", "failed", "canceled"):
            return dict(view)
        assert time.monotonic() < deadline, f"job {job_id} still {view['status']}"
        time.sleep(0.2)


def test_an_sdxl_job_runs_and_an_unsupported_folder_fails_at_once(
    api_stack: tuple[Deployment, str], tiny_model_dir: Path
) -> None:
    dep, base = api_stack
    models = dep.settings.resolved_models_dir
    make_tiny_sdxl(models / "tiny-sdxl")
    unsupported = models / "tiny-flux"
    shutil.copytree(tiny_model_dir, unsupported)
    index = json.loads((unsupported / "model_index.json").read_text())
    (unsupported / "model_index.json").write_text(
        json.dumps(index | {"_class_name": "FluxPipeline"})
    )
    with session_scope(dep.settings.resolved_database_url) as session:
        _, key = create_key(session, "families")
    auth = {"Authorization": f"Bearer {key}"}
    job = {"prompt": "a red fox", "n": 2, "seed": 3, "steps": 6, "width": 64, "height": 64}

    ids = {}
    for model in ("tiny-sdxl", "tiny-flux"):
        posted = httpx.post(f"{base}/v1/jobs", json=job | {"model": model}, headers=auth)
        assert posted.status_code == 202, posted.text
        ids[model] = posted.json()["id"]

    sdxl = _finished(base, auth, ids["tiny-sdxl"])
    assert sdxl["status"] == "succeeded", sdxl["error"]
    assert len(sdxl["images"]) == 2
    assert {stage["stage"] for stage in sdxl["stages"]} >= {"encode", "denoise", "decode"}
    image = httpx.get(sdxl["images"][0]["url"], headers=auth)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")

    flux = _finished(base, auth, ids["tiny-flux"], timeout=30)
    assert flux["status"] == "failed"
    assert "FluxPipeline" in flux["error"], flux["error"]
    failed = [stage for stage in flux["stages"] if stage["status"] == "failed"]
    assert [(s["attempts"], s["error_kind"]) for s in failed] == [(1, "invalid")], failed
