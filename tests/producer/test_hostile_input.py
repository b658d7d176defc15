"""Input a database cannot store, bodies that are not what they say, and outages: each a 4xx or
a 503 naming what is wrong, never a 500, and nothing written."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from producer.client import Client
from producer.db import session_scope
from producer.errors import InvalidJobSpec
from producer.keys import create_key
from producer.views import public_view
from testbed.services import free_port
from tests.producer.api_app import SMALL, Api

UNSTORABLE = ["a \x00 fox", "a \ud800 fox"]  # a NUL; a lone surrogate (no UTF-8 exists)


@pytest.mark.parametrize("text", UNSTORABLE, ids=["nul", "surrogate"])
@pytest.mark.parametrize("field", ["prompt", "negative_prompt", "user", "model"])
def test_text_a_database_cannot_store_is_422_naming_the_field(
    api: Api, field: str, text: str
) -> None:
    body = json.dumps(SMALL | {field: text}, ensure_ascii=True)  # \\u escapes, valid JSON
    response = api.http.post(
        "/v1/jobs", content=body, headers=api.key | {"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", field]
    assert api.jobs_in_db() == 0


@pytest.mark.parametrize("text", UNSTORABLE, ids=["nul", "surrogate"])
def test_the_client_refuses_unstorable_idempotency_keys_and_key_names(api: Api, text: str) -> None:
    client = Client(api.settings)
    with pytest.raises(InvalidJobSpec) as refused:
        client.submit("a red fox", idempotency_key=text, width=64, height=64)
    assert list(refused.value.errors) == ["idempotency_key"]
    with pytest.raises(InvalidJobSpec):
        client.submit("a red fox", idempotency_key="k" * 201, width=64, height=64)
    with (
        session_scope(api.settings.resolved_database_url) as session,
        pytest.raises(ValueError, match="name"),
    ):
        create_key(session, text)
    assert api.jobs_in_db() == 0


def test_path_and_query_parameters_that_cannot_be_ids_are_404_or_422(api: Api) -> None:
    for job_id in ("%00", "a%00b", "%ED%A0%80", "x" * 32, "'; DROP TABLE jobs; --"):
        for method, path in (
            ("GET", f"/v1/jobs/{job_id}"),
            ("DELETE", f"/v1/jobs/{job_id}"),
            ("GET", f"/v1/jobs/{job_id}/images/0"),
            ("GET", f"/v1/images/files/{job_id}/0.png?expires=99999999999&signature=x"),
        ):
            response = api.http.request(method, path, headers=api.key)
            assert response.status_code in (403, 404), (method, path, response.text)
    bad_cursor = base64.urlsafe_b64encode(b"2026-01-01T00:00:00|\x00").decode()
    for cursor in (bad_cursor, "%00", "garbage"):
        response = api.http.get("/v1/jobs", params={"cursor": cursor}, headers=api.key)
        assert response.status_code == 422


def test_bodies_that_are_not_utf8_or_nest_without_bound_are_422(api: Api) -> None:
    nested = "[" * 100_000 + "]" * 100_000
    for body in (b'{"prompt": "a \xff fox"}', nested.encode()):
        for path in ("/v1/jobs", "/v1/images/generations", "/sdapi/v1/txt2img"):
            response = api.http.post(
                path, content=body, headers=api.key | {"content-type": "application/json"}
            )
            assert response.status_code in (400, 422), (path, response.status_code)
    assert api.jobs_in_db() == 0


def test_a_body_over_the_limit_is_413_before_it_is_read(tmp_path: Path) -> None:
    api = Api(tmp_path, api_max_body_bytes=1000)
    big: dict[str, Any] = SMALL | {"prompt": "x" * 5000}
    for path in ("/v1/jobs", "/v1/images/generations", "/sdapi/v1/txt2img"):
        assert api.http.post(path, json=big, headers=api.key).status_code == 413

    def chunks() -> Any:  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b"x" * 500

    response = api.http.post(
        "/v1/jobs", content=chunks(), headers=api.key | {"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert api.submit().status_code == 202  # a small body still goes through


def test_with_the_database_down_the_api_answers_503_and_healthz_names_it(
    tmp_path: Path,
) -> None:
    healthy = Api(tmp_path / "up").http.get("/healthz")
    assert healthy.status_code == 200
    assert healthy.json() == {"status": "ok", "dependencies": {"database": "ok"}}
    api = Api(tmp_path / "db")
    api.settings.database_url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x"
    api.http.app.state.client = Client(api.settings)  # type: ignore[attr-defined]
    for method, path, shape in (
        ("POST", "/v1/jobs", "detail"),
        ("GET", "/v1/jobs", "detail"),
        ("POST", "/v1/images/generations", "error"),
        ("POST", "/sdapi/v1/txt2img", "detail"),
    ):
        response = api.http.request(method, path, json=SMALL, headers=api.key)
        assert response.status_code == 503, (path, response.text)
        assert int(response.headers["Retry-After"]) > 0 and shape in response.json()
    down = api.http.get("/healthz")
    assert down.status_code == 503 and down.json()["status"] == "unavailable"
    assert down.json()["dependencies"]["database"].startswith("down: OperationalError")


def test_api_answers_name_files_by_store_key_and_hide_server_folders(api: Api) -> None:
    png = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(png, format="PNG")
    response = api.http.post(
        "/v1/jobs",
        data={"spec": json.dumps({"width": 64, "height": 64})},
        files={"image": ("in.png", png.getvalue(), "image/png")},
        headers=api.key,
    )
    job = response.json()
    assert job["input_image"] == f"jobs/{job['id']}/input.png"
    assert str(api.settings.home) not in response.text
    failed = public_view(
        job
        | {
            "error": "encode: model: no diffusers model folder (model_index.json) at /srv/m/sd15",
            "stages": [{**job["stages"][0], "error": "OSError: '/var/lib/a/jobs/x/y.png'"}],
        }
    )
    assert (
        failed["error"] == "encode: model: no diffusers model folder (model_index.json) at …/sd15"
    )
    assert failed["stages"][0]["error"] == "OSError: '…/y.png'"
