"""The HTTP API in-process (FastAPI's test client over the real app and a real SQLite database)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.producer.api_app import ROOT, SMALL, Api


def test_health_needs_no_key_and_everything_else_does(api: Api) -> None:
    assert api.http.get("/healthz").json() == {"status": "ok", "dependencies": {"database": "ok"}}
    assert api.http.get("/v1/jobs").status_code == 401
    assert api.http.get("/v1/jobs", headers={"Authorization": "Bearer ig_wrong"}).status_code == 401
    assert api.http.get("/v1/jobs", headers=api.key).status_code == 200


def test_submit_get_and_cancel(api: Api) -> None:
    response = api.submit()
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "queued" and job["spec"]["width"] == 64
    assert response.headers["Location"] == job["urls"]["self"]
    assert api.http.get(f"/v1/jobs/{job['id']}", headers=api.key).json()["id"] == job["id"]
    canceled = api.http.delete(f"/v1/jobs/{job['id']}", headers=api.key)
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"


def test_a_key_sees_only_its_own_jobs(api: Api) -> None:
    job_id = api.submit().json()["id"]
    other = api.new_key("someone else")
    assert api.http.get(f"/v1/jobs/{job_id}", headers=other).status_code == 404
    assert api.http.delete(f"/v1/jobs/{job_id}", headers=other).status_code == 404
    assert api.http.get("/v1/jobs", headers=other).json()["jobs"] == []
    assert api.http.get("/v1/jobs/nope", headers=api.key).status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"width": 63}, "width"),
        ({"steps": 0}, "steps"),
        ({"prompt": ""}, "prompt"),
        ({"n": 99}, "n"),
        ({"colour": "red"}, "colour"),
        ({"callback_url": "ftp://x"}, "callback_url"),
        # Models are the deployment's: no path on the workers' disks, no unknown name.
        ({"model": "/etc/ssl"}, "model"),
        ({"model": "sdxl-base"}, "model"),
        # Best of N by a metric nothing here measures would keep every image, as a success.
        ({"n": 2, "keep_best": 1}, "rank_by"),  # clip_score, and no CLIP model is configured
        ({"n": 2, "keep_best": 1, "rank_by": "ssim"}, "rank_by"),  # no input image to compare
    ],
)
def test_invalid_fields_are_422_naming_them_and_write_nothing(
    api: Api, change: dict[str, Any], field: str
) -> None:
    response = api.submit(SMALL | change)
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", field]]
    assert api.jobs_in_db() == 0


def test_malformed_bodies_are_422(api: Api) -> None:
    for body in (b"{not json", b"[1, 2]", b'"text"'):
        response = api.http.post(
            "/v1/jobs", content=body, headers=api.key | {"content-type": "application/json"}
        )
        assert response.status_code == 422, body
    assert api.jobs_in_db() == 0


def test_an_idempotency_key_makes_a_retried_post_return_the_same_job(api: Api) -> None:
    first = api.submit(**{"Idempotency-Key": "order-42"})
    again = api.submit(**{"Idempotency-Key": "order-42"})
    other = api.submit(**{"Idempotency-Key": "order-43"})
    assert first.json()["id"] == again.json()["id"] != other.json()["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert api.jobs_in_db() == 2


def test_listing_pages_through_every_job_once(api: Api) -> None:
    ids = {api.submit().json()["id"] for _ in range(5)}
    api.http.delete(f"/v1/jobs/{sorted(ids)[0]}", headers=api.key)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.http.get("/v1/jobs", params=params, headers=api.key).json()
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    canceled = api.http.get("/v1/jobs", params={"status": "canceled"}, headers=api.key).json()
    assert [job["id"] for job in canceled["jobs"]] == [sorted(ids)[0]]
    assert (
        api.http.get("/v1/jobs", params={"cursor": "garbage"}, headers=api.key).status_code == 422
    )


def test_quotas_answer_429_with_retry_after(tmp_path: Path) -> None:
    in_flight = Api(tmp_path / "a", api_max_in_flight=2)
    assert [in_flight.submit().status_code for _ in range(3)] == [202, 202, 429]
    assert int(in_flight.submit().headers["Retry-After"]) > 0
    per_minute = Api(tmp_path / "b", api_submissions_per_minute=3)
    codes = [per_minute.submit().status_code for _ in range(4)]
    assert codes == [202, 202, 202, 429]
    assert per_minute.jobs_in_db() == 3
    # Another key has its own allowance.
    other = per_minute.new_key("other")
    assert per_minute.http.post("/v1/jobs", json=SMALL, headers=other).status_code == 202


def test_multipart_submission_with_an_image(api: Api) -> None:
    png = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(png, format="PNG")
    spec = json.dumps({"n": 1, "steps": 4, "width": 64, "height": 64, "strength": 0.5})
    response = api.http.post(
        "/v1/jobs",
        data={"spec": spec},
        files={"image": ("in.png", png.getvalue(), "image/png")},
        headers=api.key,
    )
    assert response.status_code == 202, response.text
    assert (
        response.json()["input_image"].endswith("input.png") and response.json()["prompt"] is None
    )
    bad = api.http.post(
        "/v1/jobs",
        data={"spec": spec},
        files={"image": ("in.png", b"not an image", "image/png")},
        headers=api.key,
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "image"]
    assert api.jobs_in_db() == 1


def test_the_checked_in_openapi_spec_is_current(api: Api) -> None:
    checked_in = json.loads((ROOT / "openapi.json").read_text())
    assert api.http.get("/openapi.json").json() == checked_in, (
        "run: imggen api --openapi > openapi.json"
    )
