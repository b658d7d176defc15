"""Model families and LoRA through the shared API stack (a real worker, Redis, PostgreSQL): an
SDXL job runs every stage as an SD job does; a folder of a family imggen does not run fails its
job as invalid at once, with the pipeline class in the reason, never as a retry; a job with an
adapter draws another image than the same job without, and an unknown adapter is invalid."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from imggen.tiny import make_tiny_lora, make_tiny_sdxl
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


def _key(dep: Deployment, name: str) -> dict[str, str]:
    with session_scope(dep.settings.resolved_database_url) as session:
        _, key = create_key(session, name)
    return {"Authorization": f"Bearer {key}"}


def _submit(base: str, auth: dict[str, str], **body: Any) -> str:
    posted = httpx.post(f"{base}/v1/jobs", json=JOB | body, headers=auth)
    assert posted.status_code == 202, posted.text
    return str(posted.json()["id"])


JOB = {"prompt": "a red fox", "n": 2, "seed": 3, "steps": 6, "width": 64, "height": 64}


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
    auth = _key(dep, "families")
    ids = {model: _submit(base, auth, model=model) for model in ("tiny-sdxl", "tiny-flux")}

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


def test_a_lora_job_draws_another_image_and_an_unknown_adapter_is_invalid(
    api_stack: tuple[Deployment, str], tiny_model_dir: Path
) -> None:
    dep, base = api_stack
    make_tiny_lora(dep.settings.resolved_loras_dir, tiny_model_dir, "ink", seed=1)
    auth = _key(dep, "adapters")
    plain, ink, gone = (
        _submit(base, auth, cache=False),
        _submit(base, auth, cache=False, loras=[{"name": "ink", "weight": 0.8}]),
        _submit(base, auth, cache=False, loras=[{"name": "gone"}]),
    )
    views = {job: _finished(base, auth, job) for job in (plain, ink, gone)}
    assert views[plain]["status"] == views[ink]["status"] == "succeeded"
    assert views[ink]["spec"]["loras"] == [{"name": "ink", "weight": 0.8}]

    def png(job: str) -> bytes:
        return httpx.get(views[job]["images"][0]["url"], headers=auth).content

    assert png(ink) != png(plain)
    assert views[gone]["status"] == "failed"
    assert "no adapter 'gone'" in views[gone]["error"], views[gone]["error"]
    # After the adapter job, the model draws plain images again.
    again = _finished(base, auth, _submit(base, auth, cache=False))
    assert httpx.get(again["images"][0]["url"], headers=auth).content == png(plain)
