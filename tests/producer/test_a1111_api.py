"""The AUTOMATIC1111 API surface in-process (no worker): auth as its clients send it, what it
honours, accepts and refuses, its error shapes, and that a refused request writes nothing. The
real `webuiapi` client against a live worker is in tests/worker/test_compat_clients.py."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from producer.api.a1111.translate import Txt2ImgRequest, sampler
from producer.db import session_scope
from producer.models import RegistryEntry, utcnow
from tests.producer.api_app import Api

SMALL: dict[str, Any] = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 4}


@pytest.fixture()
def impatient(tmp_path: Path) -> Api:
    """No worker runs here: a request waits a moment, then answers with its job's id."""
    return Api(tmp_path, api_wait_seconds=0.3)


def _basic(api: Api) -> dict[str, str]:
    secret = api.key["Authorization"].removeprefix("Bearer ")
    return {"Authorization": "Basic " + base64.b64encode(f"anyone:{secret}".encode()).decode()}


def _post(api: Api, path: str, body: Any) -> Any:
    return api.http.post(f"/sdapi/v1/{path}", json=body, headers=_basic(api))


def _job(api: Api, response: Any) -> dict[str, Any]:
    assert response.status_code == 504, response.text
    job_id = response.json()["job_id"]
    assert job_id in response.json()["detail"]
    return api.http.get(f"/v1/jobs/{job_id}", headers=api.key).json()


def test_basic_auth_with_the_key_as_password_and_bearer_both_work(impatient: Api) -> None:
    assert impatient.http.get("/sdapi/v1/samplers", headers=_basic(impatient)).status_code == 200
    assert impatient.http.get("/sdapi/v1/samplers", headers=impatient.key).status_code == 200
    wrong = {"Authorization": "Basic " + base64.b64encode(b"anyone:ig_wrong").decode()}
    for headers in ({}, wrong, {"Authorization": "Bearer ig_wrong"}):
        response = impatient.http.post("/sdapi/v1/txt2img", json=SMALL, headers=headers)
        assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Basic"
    assert impatient.jobs_in_db() == 0


def test_txt2img_fields_map_onto_the_job(impatient: Api) -> None:
    body = SMALL | {
        "negative_prompt": "blurry",
        "seed": 42,
        "cfg_scale": 5.5,
        "batch_size": 2,
        "n_iter": 2,
        "sampler_name": "DPM++ 2M",
        "scheduler": "Karras",
        # What webuiapi sends by default: accepted, as A1111 treats it without hires fix.
        "enable_hr": False,
        "denoising_strength": 0.7,
        "hr_scale": 2,
        "eta": 1.0,
        "s_noise": 1,
        "styles": [],
        "override_settings": {},
        "alwayson_scripts": {},
        "script_args": [],
    }
    job = _job(impatient, _post(impatient, "txt2img", body))
    spec = job["spec"]
    assert (spec["prompt"], spec["negative_prompt"], spec["seed"]) == ("a red fox", "blurry", 42)
    assert (spec["guidance"], spec["n"], spec["steps"]) == (5.5, 4, 4)
    assert (spec["scheduler"], spec["has_input_image"]) == ("dpmpp_2m_karras", False)
    assert _job(impatient, _post(impatient, "txt2img", SMALL | {"seed": -1}))["spec"]["seed"] >= 0


def test_lora_tags_in_the_prompt_become_the_jobs_adapters(impatient: Api) -> None:
    body = SMALL | {"prompt": "a red fox <lora:ink:0.6>, in snow <lora:neon>"}
    spec = _job(impatient, _post(impatient, "txt2img", body))["spec"]
    assert spec["prompt"] == "a red fox , in snow"
    assert spec["loras"] == [{"name": "ink", "weight": 0.6}, {"name": "neon", "weight": 1.0}]


def test_img2img_takes_a_data_url_and_the_strength(impatient: Api) -> None:
    png = io.BytesIO()
    Image.new("RGB", (32, 32), (9, 9, 200)).save(png, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    body = SMALL | {"init_images": [data_url], "denoising_strength": 0.4, "sampler_name": "Euler"}
    job = _job(impatient, _post(impatient, "img2img", body))
    assert job["input_image"].endswith("input.png")
    assert (job["spec"]["strength"], job["spec"]["scheduler"]) == (0.4, "euler")


@pytest.mark.parametrize(
    ("path", "change", "field"),
    [
        ("txt2img", {"width": 63}, "width"),
        ("txt2img", {"steps": 0}, "steps"),
        ("txt2img", {"prompt": ""}, "prompt"),
        ("txt2img", {"prompt": "a fox <lora:ink:much>"}, "prompt"),
        ("txt2img", {"prompt": "a fox <lora:../../x:1>"}, "prompt"),
        ("txt2img", {"prompt": "a fox <lora:ink:9>"}, "prompt"),
        ("txt2img", {"batch_size": 3, "n_iter": 3}, "batch_size"),
        ("txt2img", {"cfg_scale": 99}, "cfg_scale"),
        ("txt2img", {"colour": "red"}, "colour"),
        ("txt2img", {"steps": "many"}, "steps"),
        ("txt2img", {"enable_hr": True}, "enable_hr"),
        ("txt2img", {"restore_faces": True}, "restore_faces"),
        ("txt2img", {"styles": ["cinematic"]}, "styles"),
        ("txt2img", {"subseed_strength": 0.5}, "subseed_strength"),
        ("txt2img", {"alwayson_scripts": {"ControlNet": {"args": [1]}}}, "alwayson_scripts"),
        ("txt2img", {"override_settings": {"CLIP_stop_at_last_layers": 2}}, "override_settings"),
        ("txt2img", {"override_settings": {"sd_model_checkpoint": "../x"}}, "override_settings"),
        ("txt2img", {"override_settings": {"sd_model_checkpoint": "sdxl"}}, "override_settings"),
        ("txt2img", {"sampler_name": "Euler a", "scheduler": "karras"}, "scheduler"),
        ("txt2img", {"scheduler": "exponential"}, "scheduler"),
        ("img2img", {"init_images": []}, "init_images"),
        ("img2img", {"init_images": ["!!not base64"]}, "init_images"),
        ("img2img", {"init_images": [base64.b64encode(b"not a png").decode()]}, "init_images"),
        ("img2img", {"init_images": ["eA=="], "mask": "eA=="}, "mask"),
        ("img2img", {"init_images": ["eA=="], "denoising_strength": 0}, "denoising_strength"),
    ],
)
def test_invalid_or_unsupported_fields_are_422_naming_them_and_write_nothing(
    impatient: Api, path: str, change: dict[str, Any], field: str
) -> None:
    response = _post(impatient, path, SMALL | change)
    assert response.status_code == 422, response.text
    fields = [error["loc"][1] for error in response.json()["detail"]]
    assert field in fields or any(f.startswith(f"{field}.") for f in fields), fields
    assert impatient.jobs_in_db() == 0


def test_an_unknown_sampler_is_404_as_a1111_answers(impatient: Api) -> None:
    response = _post(impatient, "txt2img", SMALL | {"sampler_name": "Heun"})
    assert response.status_code == 404 and "Sampler not found" in response.json()["detail"]
    for body in (b"{not json", b"[1]", b"\xff"):
        bad = impatient.http.post(
            "/sdapi/v1/txt2img",
            content=body,
            headers=_basic(impatient) | {"content-type": "application/json"},
        )
        assert bad.status_code == 422
    assert impatient.jobs_in_db() == 0


def test_sampler_names_and_aliases_map_onto_imggen_samplers() -> None:
    def pick(**fields: Any) -> str | None:
        return sampler(Txt2ImgRequest.model_validate(fields))

    assert pick() is None  # the model's own
    assert pick(sampler_name="Euler a", scheduler="automatic") == "euler_a"
    assert pick(sampler_index="k_euler") == "euler"  # the deprecated field, by alias
    assert pick(sampler_name="DPM++ 2M Karras") == "dpmpp_2m_karras"
    assert pick(sampler_name="DPM++ 2M", scheduler="karras") == "dpmpp_2m_karras"
    assert pick(sampler_name="UniPC") == "unipc"


def test_progress_and_interrupt_act_on_the_callers_current_job(impatient: Api) -> None:
    idle = impatient.http.get("/sdapi/v1/progress", headers=_basic(impatient)).json()
    assert idle["progress"] == 0.0 and idle["state"]["job_count"] == 0
    job = _job(impatient, _post(impatient, "txt2img", SMALL))
    other = impatient.new_key("someone else")
    assert impatient.http.get("/sdapi/v1/progress", headers=other).json()["state"]["job"] == ""
    current = impatient.http.get("/sdapi/v1/progress", headers=_basic(impatient)).json()
    assert current["state"]["job"] == job["id"] and current["state"]["job_count"] == 1
    assert impatient.http.post("/sdapi/v1/interrupt", headers=other).json()["interrupted"] == []
    stopped = impatient.http.post("/sdapi/v1/interrupt", headers=_basic(impatient)).json()
    assert stopped["interrupted"] == [job["id"]]
    view = impatient.http.get(f"/v1/jobs/{job['id']}", headers=impatient.key).json()
    assert view["status"] == "canceled"


def test_models_samplers_schedulers_options_and_scripts(impatient: Api) -> None:
    def get(path: str) -> Any:
        response = impatient.http.get(f"/sdapi/v1/{path}", headers=_basic(impatient))
        assert response.status_code == 200
        return response.json()

    assert [m["title"] for m in get("sd-models")] == ["shapes"]
    assert {"Euler a", "DDIM", "DPM++ 2M"} <= {s["name"] for s in get("samplers")}
    assert [s["name"] for s in get("schedulers")] == ["automatic", "karras"]
    assert get("options")["sd_model_checkpoint"] == "shapes"
    assert get("scripts") == {"txt2img": [], "img2img": []}
    assert get("loras") == []  # no worker has registered an adapter
    with session_scope(impatient.settings.resolved_database_url) as session:
        session.add(
            RegistryEntry(
                hostname="gpu-1",
                model="shapes",
                family="sd",
                pipeline="StableDiffusionPipeline",
                samplers=["ddim"],
                adapters=["ink", "neon"],
                updated_at=utcnow(),
            )
        )
    assert [lora["name"] for lora in get("loras")] == ["ink", "neon"]
    assert (
        impatient.http.post("/sdapi/v1/options", json={}, headers=_basic(impatient)).status_code
        == 405
    )
