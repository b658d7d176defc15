"""The clients people already use, unmodified, against imggen: the official `openai` package and
`webuiapi` (AUTOMATIC1111's API), over a live API process and worker (the shared ``api_stack``).
Only their base URL and key are set."""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import webuiapi
from PIL import Image

from producer.db import session_scope
from producer.keys import create_key
from testbed.deployments import Deployment

pytestmark = pytest.mark.slow


def _new_key(dep: Deployment, name: str) -> str:
    with session_scope(dep.settings.resolved_database_url) as session:
        _, key = create_key(session, name)
    return key


def _png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


def _native(base: str, key: str, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    return response.json()


def test_the_openai_client_generates_edits_and_lists_models(
    api_stack: tuple[Deployment, str],
) -> None:
    dep, base = api_stack
    key = _new_key(dep, "openai")
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)
    bearer = {"Authorization": f"Bearer {key}"}

    # 1. b64_json: the images come back in the response, and the job is an ordinary job.
    made = client.images.generate(
        prompt="a red fox", n=2, size="64x64", response_format="b64_json", user="end-user-1"
    )
    assert [(_png(base64.b64decode(d.b64_json)).size) for d in made.data] == [(64, 64)] * 2
    job = _native(base, key, made.job_id)  # type: ignore[attr-defined]
    assert job["status"] == "succeeded" and job["spec"]["user"] == "end-user-1"
    artifacts = Path(dep.settings.resolved_artifacts_url)
    stored = [(artifacts / image["uri"]).read_bytes() for image in job["images"]]
    assert [base64.b64decode(d.b64_json) for d in made.data] == stored
    assert made.data[0].metrics == job["images"][0]["metrics"]  # type: ignore[attr-defined]

    # 2. url: a link that works without the key, and not once tampered with.
    linked = client.images.generate(prompt="a red fox", size="64x64", response_format="url")
    url = linked.data[0].url
    assert url is not None
    fetched = httpx.get(url)
    assert fetched.status_code == 200 and _png(fetched.content).size == (64, 64)
    assert httpx.get(url[:-1] + ("0" if url[-1] != "0" else "1")).status_code == 403

    # 3. edits: image-to-image from a PNG.
    source = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 20, 220)).save(source, format="PNG")
    edited = client.images.edit(
        image=("in.png", source.getvalue(), "image/png"),
        prompt="a blue square",
        size="64x64",
        response_format="b64_json",
    )
    assert _png(base64.b64decode(edited.data[0].b64_json)).size == (64, 64)
    assert _native(base, key, edited.job_id)["input_image"]  # type: ignore[attr-defined]

    # 4. Refusals in the client's own error types, writing nothing.
    before = len(
        httpx.get(f"{base}/v1/jobs", headers={"Authorization": f"Bearer {key}"}).json()["jobs"]
    )
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(prompt="a red fox", size="13x13")
    assert refused.value.param == "size"  # type: ignore[attr-defined]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{base}/v1", api_key="ig_wrong", max_retries=0).images.generate(
            prompt="a red fox"
        )
    after = len(
        httpx.get(f"{base}/v1/jobs", headers={"Authorization": f"Bearer {key}"}).json()["jobs"]
    )
    assert after == before

    # 5. A caller that gives up waiting loses nothing: its job runs on to the end.
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.5).images.generate(prompt="a slow fox", size="512x512")
    mine = httpx.get(f"{base}/v1/jobs", params={"limit": 1}, headers=bearer).json()["jobs"]
    assert mine[0]["prompt"] == "a slow fox"
    assert dep.client.job(mine[0]["id"]).wait(timeout=120)["status"] == "succeeded"

    # 6. Models: the OpenAI list, with imggen's fields.
    (model,) = client.models.list().data
    assert model.id == str(dep.settings.default_model) and model.owned_by == "imggen"
    assert model.native_size == "64x64" and model.default  # type: ignore[attr-defined]


def test_webuiapi_txt2img_img2img_progress_interrupt_and_listings(
    api_stack: tuple[Deployment, str],
) -> None:
    dep, base = api_stack
    key = _new_key(dep, "a1111")
    # As webuiapi is used against A1111 started with --api-auth: a user name and a password.
    api = webuiapi.WebUIApi(baseurl=f"{base}/sdapi/v1", username="anyone", password=key, steps=6)

    # 1. txt2img with webuiapi's defaults (sampler "Euler a", scheduler "automatic").
    result = api.txt2img(prompt="a red fox", width=64, height=64, seed=5, batch_size=2)
    assert [image.size for image in result.images] == [(64, 64)] * 2
    info = result.info
    assert info["all_seeds"] == [5, 6] and info["sampler_name"] == "Euler a"
    job = _native(base, key, info["job_id"])
    assert job["status"] == "succeeded" and job["spec"]["scheduler"] == "euler_a"
    assert len(info["metrics"]) == 2 and info["metrics"][0] == job["images"][0]["metrics"]

    # 2. img2img from the first image.
    again = api.img2img(
        images=[result.image], prompt="a red fox", width=64, height=64, denoising_strength=0.5
    )
    assert again.image.size == (64, 64)
    assert _native(base, key, again.info["job_id"])["spec"]["strength"] == 0.5

    # 3. A long job: its progress while it runs, then interrupt ends it.
    outcome: dict[str, Any] = {}

    def long_job() -> None:
        outcome["result"] = api.txt2img(prompt="a red fox", width=512, height=512, steps=150)

    runner = threading.Thread(target=long_job)
    runner.start()
    deadline = time.monotonic() + 120
    progress = api.get_progress()
    while progress["state"]["sampling_step"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        progress = api.get_progress()
    assert 0 < progress["progress"] < 1 and progress["eta_relative"] > 0, progress
    assert progress["state"]["sampling_steps"] == 150
    interrupted = api.interrupt()
    assert interrupted["interrupted"] == [progress["state"]["job"]]
    runner.join(120)
    assert not runner.is_alive()
    stopped = outcome["result"]
    assert stopped.images == [] and stopped.info["interrupted"] is True
    assert _native(base, key, progress["state"]["job"])["status"] == "canceled"

    # 4. Listings.
    assert api.util_get_model_names() == [str(dep.settings.default_model)]
    assert "Euler a" in api.util_get_sampler_names()
    assert api.get_options()["sd_model_checkpoint"] == str(dep.settings.default_model)

    # 5. A refusal arrives as webuiapi raises for any error status.
    with pytest.raises(RuntimeError, match="422"):
        api.txt2img(prompt="a red fox", width=63, height=64)
