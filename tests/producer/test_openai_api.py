"""The OpenAI Images API surface in-process (no worker): its error shapes, what it honours and
refuses, and that a refused request writes nothing. The real `openai` client against a live
worker is in tests/worker/test_compat_clients.py."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.producer.api_app import Api

PROMPT: dict[str, Any] = {"prompt": "a red fox", "size": "64x64"}


@pytest.fixture()
def impatient(tmp_path: Path) -> Api:
    """No worker runs here: a request waits a moment, then answers with its job's id."""
    return Api(tmp_path, api_wait_seconds=0.3)


def _generate(api: Api, body: dict[str, Any], **headers: str) -> Any:
    return api.http.post("/v1/images/generations", json=body, headers=api.key | headers)


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


@pytest.mark.parametrize(
    ("change", "param", "code"),
    [
        ({"size": "13x13"}, "size", "invalid_value"),  # below imggen's minimum side
        ({"size": "63x64"}, "size", "invalid_value"),  # not a multiple of 8
        ({"size": "big"}, "size", "invalid_value"),
        ({"n": 99}, "n", "invalid_value"),
        ({"n": "two"}, "n", "invalid_type"),
        ({"prompt": ""}, "prompt", "invalid_value"),
        ({"prompt": "x" * 1001}, "prompt", "invalid_value"),
        ({"response_format": "jpeg"}, "response_format", "invalid_value"),
        ({"quality": "hd"}, "quality", "invalid_value"),
        ({"style": "vivid"}, "style", "invalid_value"),
        ({"background": "transparent"}, "background", "invalid_value"),
        ({"output_format": "webp"}, "output_format", "invalid_value"),
        ({"stream": True}, "stream", "invalid_value"),
        ({"moderation": "low"}, "moderation", "invalid_value"),
        ({"partial_images": 2}, "partial_images", "invalid_value"),
        ({"colour": "red"}, "colour", "unknown_parameter"),
        ({"user": "u" * 201}, "user", "invalid_value"),
    ],
)
def test_invalid_or_unsupported_values_are_400_naming_the_parameter_and_write_nothing(
    impatient: Api, change: dict[str, Any], param: str, code: str
) -> None:
    response = _generate(impatient, PROMPT | change)
    assert response.status_code == 400, response.text
    error = _error(response)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert impatient.jobs_in_db() == 0


def test_a_missing_prompt_and_bodies_that_are_not_json_objects_are_400(impatient: Api) -> None:
    assert _error(_generate(impatient, {"size": "64x64"}))["param"] == "prompt"
    for body in (b"{not json", b"[1]", b"\xff\xfe", b""):
        response = impatient.http.post(
            "/v1/images/generations",
            content=body,
            headers=impatient.key | {"content-type": "application/json"},
        )
        assert response.status_code == 400 and _error(response)["type"] == "invalid_request_error"
    assert impatient.jobs_in_db() == 0


def test_an_unknown_model_is_404_model_not_found(impatient: Api) -> None:
    response = _generate(impatient, PROMPT | {"model": "dall-e-3"})
    assert response.status_code == 404
    assert (_error(response)["code"], _error(response)["param"]) == ("model_not_found", "model")
    assert impatient.jobs_in_db() == 0


def test_without_a_valid_key_the_answer_is_401_invalid_api_key(impatient: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer ig_wrong"}, {"Authorization": "Basic eDp5"}):
        response = impatient.http.post("/v1/images/generations", json=PROMPT, headers=headers)
        assert response.status_code == 401 and _error(response)["code"] == "invalid_api_key"
    assert impatient.http.get("/v1/models").status_code == 401
    assert impatient.jobs_in_db() == 0


def test_a_job_that_outlasts_the_wait_is_named_and_goes_on(impatient: Api) -> None:
    response = _generate(impatient, PROMPT | {"n": 2, "user": "end-user-7"})
    assert response.status_code == 504
    assert response.headers["x-should-retry"] == "false"  # a retry would be a second job
    error = _error(response)
    assert error["code"] == "timeout" and error["job_id"] in error["message"]
    job = impatient.http.get(f"/v1/jobs/{error['job_id']}", headers=impatient.key).json()
    assert job["status"] == "queued"
    assert {k: job["spec"][k] for k in ("n", "width", "height", "user")} == {
        "n": 2,
        "width": 64,
        "height": 64,
        "user": "end-user-7",
    }


def test_size_left_out_or_auto_takes_the_model_native_size(impatient: Api) -> None:
    for body in ({"prompt": "a red fox"}, {"prompt": "a red fox", "size": "auto"}):
        job_id = _error(_generate(impatient, body))["job_id"]
        spec = impatient.http.get(f"/v1/jobs/{job_id}", headers=impatient.key).json()["spec"]
        assert (spec["width"], spec["height"]) == (64, 64)  # the shapes model's


def test_over_quota_is_429_in_the_openai_shape(tmp_path: Path) -> None:
    api = Api(tmp_path, api_wait_seconds=0.1, api_max_in_flight=1)
    assert _generate(api, PROMPT).status_code == 504
    response = _generate(api, PROMPT)
    assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0
    assert _error(response)["code"] == "rate_limit_exceeded"
    assert api.jobs_in_db() == 1


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


def test_edits_take_one_image_and_refuse_masks(impatient: Api) -> None:
    def edit(files: list[tuple[str, Any]], **data: str) -> Any:
        fields = {"prompt": "a blue fox", "size": "64x64"} | data
        return impatient.http.post(
            "/v1/images/edits", data=fields, files=files, headers=impatient.key
        )

    image = ("image", ("in.png", _png(), "image/png"))
    accepted = edit([image], n="2")
    assert accepted.status_code == 504, accepted.text
    job = impatient.http.get(f"/v1/jobs/{_error(accepted)['job_id']}", headers=impatient.key)
    assert job.json()["input_image"].endswith("input.png") and job.json()["spec"]["n"] == 2
    refused = [
        (edit([image, ("mask", ("m.png", _png(), "image/png"))]), "mask"),
        (edit([image, ("image", ("b.png", _png(), "image/png"))]), "image"),
        (edit([("image", ("x.png", b"not an image", "image/png"))]), "image"),
        (edit([]), "image"),
        (edit([image], n="lots"), "n"),
    ]
    for response, param in refused:
        assert response.status_code == 400, response.text
        assert _error(response)["param"] == param
    not_multipart = impatient.http.post(
        "/v1/images/edits", json={"prompt": "x"}, headers=impatient.key
    )
    assert not_multipart.status_code == 400
    assert impatient.jobs_in_db() == 1


def test_models_list_in_the_openai_shape_with_imggen_fields(impatient: Api) -> None:
    listing = impatient.http.get("/v1/models", headers=impatient.key).json()
    assert listing["object"] == "list"
    (shapes,) = listing["data"]
    assert shapes["object"] == "model" and shapes["id"] == "shapes" and shapes["default"]
    assert shapes["native_size"] == "64x64" and "euler_a" in shapes["samplers"]
    one = impatient.http.get("/v1/models/shapes", headers=impatient.key)
    assert one.json() == shapes
    missing = impatient.http.get("/v1/models/dall-e-3", headers=impatient.key)
    assert missing.status_code == 404 and _error(missing)["code"] == "model_not_found"


def test_image_links_refuse_a_wrong_or_expired_signature(impatient: Api) -> None:
    job_id = _error(_generate(impatient, PROMPT))["job_id"]
    base = f"/v1/images/files/{job_id}/0.png"
    for query in ("", "?expires=1&signature=x", "?expires=99999999999&signature=x"):
        assert impatient.http.get(base + query).status_code == 403
    assert impatient.http.get("/v1/images/files/nope/0.png?expires=99999999999").status_code == 403
