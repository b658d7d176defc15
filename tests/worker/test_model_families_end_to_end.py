"""Model families, LoRA and the model registry through the shared API stack (a real worker,
Redis, PostgreSQL). The worker registers the folders it can run and the adapters it has; the API
lists them and refuses, at submit, a job for a folder it cannot run, a sampler its family does
not step or an adapter it lacks. SDXL and SD3 jobs run every stage as an SD job does; a job
with an adapter draws another image than the same job without; and a job that reaches a worker
with a folder of a family imggen does not run (accepted before the folder changed) fails as
invalid at once, never as a retry."""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from imggen.tiny import make_tiny_lora, make_tiny_sd3, make_tiny_sdxl
from producer.db import session_scope
from producer.keys import create_key
from producer.spec import validate_spec
from testbed.deployments import Deployment

pytestmark = pytest.mark.slow

JOB = {"prompt": "a red fox", "n": 2, "seed": 3, "steps": 6, "width": 64, "height": 64}


def _key(dep: Deployment, name: str) -> dict[str, str]:
    with session_scope(dep.settings.resolved_database_url) as session:
        _, key = create_key(session, name)
    return {"Authorization": f"Bearer {key}"}


def _submit(base: str, auth: dict[str, str], **body: Any) -> str:
    posted = httpx.post(f"{base}/v1/jobs", json=JOB | body, headers=auth)
    assert posted.status_code == 202, posted.text
    return str(posted.json()["id"])


def _finished(base: str, auth: dict[str, str], job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = httpx.get(f"{base}/v1/jobs/{job_id}", headers=auth).json()
        if view["status"] in ("succeeded", "failed", "canceled"):
            return dict(view)
        assert time.monotonic() < deadline, f"job {job_id} still {view['status']}"
        time.sleep(0.2)


def _registered(base: str, auth: dict[str, str], model: str, adapter: str | None = None) -> dict:
    """The model's entry in GET /v1/models once the worker has registered it (and ``adapter``)."""
    deadline = time.monotonic() + 30
    while True:
        listed = {m["id"]: m for m in httpx.get(f"{base}/v1/models", headers=auth).json()["data"]}
        entry = listed.get(model, {})
        if entry.get("workers") and (adapter is None or adapter in entry["adapters"]):
            return dict(entry)
        assert time.monotonic() < deadline, f"{model} not registered: {entry}"
        time.sleep(0.2)


def _diffusers_image(folder: Path, seed: int) -> np.ndarray:
    """What diffusers' own pipeline draws for ``JOB``'s fields on ``folder``, with the noise
    imggen draws for ``seed``."""
    pipe = DiffusionPipeline.from_pretrained(folder, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    side = JOB["width"] // 8
    shape = (1, pipe.vae.config.latent_channels, side, side)
    noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))
    image = pipe(
        JOB["prompt"],
        num_inference_steps=JOB["steps"],
        guidance_scale=7.5,  # the job's default
        height=JOB["height"],
        width=JOB["width"],
        latents=noise,
    ).images[0]
    return np.asarray(image, dtype=np.int32)


def _flux_like(tiny_model_dir: Path, target: Path, workdir: Path) -> None:
    """A copy of the tiny model that says it is a Flux pipeline, moved into place whole."""
    made = shutil.copytree(tiny_model_dir, workdir / target.name)
    index = json.loads((made / "model_index.json").read_text())
    (made / "model_index.json").write_text(json.dumps(index | {"_class_name": "FluxPipeline"}))
    made.rename(target)


def test_the_registry_lists_what_workers_run_and_sdxl_and_sd3_jobs_run(
    api_stack: tuple[Deployment, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    dep, base = api_stack
    models = dep.settings.resolved_models_dir
    make_tiny_sdxl(models / "tiny-sdxl")
    make_tiny_sd3(models / "tiny-sd3")
    _flux_like(tiny_model_dir, models / "tiny-flux", tmp_path)
    auth = _key(dep, "families")

    entry = _registered(base, auth, "tiny-sdxl")
    assert (entry["family"], entry["pipeline"]) == ("sdxl", "StableDiffusionXLPipeline")
    assert entry["native_size"] == "64x64" and "dpmpp_2m_karras" in entry["samplers"]
    flux = dep.registered("tiny-flux")
    assert flux.hosts == () and "'FluxPipeline' is not a pipeline imggen runs" in str(flux.refused)
    listed = {m["id"]: m for m in httpx.get(f"{base}/v1/models", headers=auth).json()["data"]}
    assert listed["tiny-flux"]["workers"] == [] and listed["tiny-flux"]["refused"]
    refused = httpx.post(f"{base}/v1/jobs", json=JOB | {"model": "tiny-flux"}, headers=auth)
    assert refused.status_code == 422, refused.text
    assert "cannot be run here" in refused.text and "FluxPipeline" in refused.text

    sd3 = _registered(base, auth, "tiny-sd3")
    assert (sd3["family"], sd3["samplers"]) == ("sd3", [])  # flow matching: its own only
    refused = httpx.post(
        f"{base}/v1/jobs", json=JOB | {"model": "tiny-sd3", "scheduler": "ddim"}, headers=auth
    )
    assert refused.status_code == 422 and "scheduler" in refused.text, refused.text

    jobs = {model: _submit(base, auth, model=model) for model in ("tiny-sdxl", "tiny-sd3")}
    for model, job in jobs.items():
        view = _finished(base, auth, job)
        assert view["status"] == "succeeded", view["error"]
        assert len(view["images"]) == 2
        png = httpx.get(view["images"][1]["url"], headers=auth)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        # Each stage a task of its own, through the store: what diffusers' pipeline draws.
        ours = np.asarray(Image.open(io.BytesIO(png.content)), dtype=np.int32)
        theirs = _diffusers_image(models / model, seed=JOB["seed"] + 1)
        assert np.abs(ours - theirs).max() <= 1, model


def test_an_unsupported_folder_that_reaches_a_worker_fails_as_invalid_at_once(
    api_stack: tuple[Deployment, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    dep, base = api_stack
    _flux_like(tiny_model_dir, dep.settings.resolved_models_dir / "tiny-flux-2", tmp_path)
    # Recorded as it was accepted before the folder changed: submit_spec takes a checked spec.
    spec = validate_spec(JOB | {"model": "tiny-flux-2", "steps": 4})
    view = dep.client.submit_spec(spec).wait(timeout=30)
    assert view["status"] == "failed"
    assert "FluxPipeline" in view["error"], view["error"]
    failed = [stage for stage in view["stages"] if stage["status"] == "failed"]
    assert [(s["attempts"], s["error_kind"]) for s in failed] == [(1, "invalid")], failed


def test_a_lora_job_draws_another_image_and_an_unknown_adapter_is_refused(
    api_stack: tuple[Deployment, str], tiny_model_dir: Path
) -> None:
    dep, base = api_stack
    make_tiny_lora(dep.settings.resolved_loras_dir, tiny_model_dir, "ink", seed=1)
    auth = _key(dep, "adapters")
    _registered(base, auth, dep.settings.default_model, adapter="ink")
    refused = httpx.post(f"{base}/v1/jobs", json=JOB | {"loras": [{"name": "gone"}]}, headers=auth)
    assert refused.status_code == 422 and "no adapter 'gone'" in refused.text, refused.text

    plain = _submit(base, auth, cache=False)
    ink = _submit(base, auth, cache=False, loras=[{"name": "ink", "weight": 0.8}])
    views = {job: _finished(base, auth, job) for job in (plain, ink)}
    assert views[plain]["status"] == views[ink]["status"] == "succeeded"
    assert views[ink]["spec"]["loras"] == [{"name": "ink", "weight": 0.8}]

    def png(view: dict[str, Any]) -> bytes:
        return httpx.get(view["images"][0]["url"], headers=auth).content

    assert png(views[ink]) != png(views[plain])
    # After the adapter job, the model draws plain images again.
    again = _finished(base, auth, _submit(base, auth, cache=False))
    assert png(again) == png(views[plain])
