"""/v1/batches: a JSON array or JSON lines, bad rows named by row and field with nothing written,
idempotent by name per key, steered, and private to the key that made it."""

from __future__ import annotations

import json

from tests.producer.api_app import SMALL, Api

ROW = {k: v for k, v in SMALL.items() if k != "prompt"}


def test_a_batch_goes_in_as_a_json_array_and_again_by_name_adds_nothing(api: Api) -> None:
    rows = [ROW | {"prompt": f"a fox {i}"} for i in range(5)]
    made = api.http.post("/v1/batches", params={"name": "n1"}, json=rows, headers=api.key)
    assert made.status_code == 202, made.text
    body = made.json()
    assert body["submitted"] == 5 and body["batch"]["jobs"] == 5
    assert made.headers["Location"].endswith(f"/v1/batches/{body['batch']['id']}")
    again = api.http.post("/v1/batches", params={"name": "n1"}, json=rows, headers=api.key)
    assert again.json()["submitted"] == 0 and again.json()["already"] == 5
    assert api.jobs_in_db() == 5
    listed = api.http.get("/v1/batches", headers=api.key).json()["batches"]
    assert [b["id"] for b in listed] == [body["batch"]["id"]]


def test_json_lines_and_bad_rows_named_by_row_and_field_with_nothing_written(api: Api) -> None:
    lines = "\n".join(json.dumps(ROW | {"prompt": p}) for p in ("ok", "", "ok again"))
    refused = api.http.post(
        "/v1/batches",
        params={"name": "n2"},
        content=lines + "\n" + json.dumps(ROW | {"prompt": "x", "steps": 0}),
        headers=api.key | {"Content-Type": "application/x-ndjson"},
    )
    assert refused.status_code == 422
    assert {tuple(d["loc"]) for d in refused.json()["detail"]} == {
        ("body", "2", "prompt"),
        ("body", "4", "steps"),
    }
    assert api.jobs_in_db() == 0
    for body in ("not json", "{}", "[1]", '[{"prompt": "x", "colour": "red"}]'):
        answer = api.http.post("/v1/batches", params={"name": "n3"}, content=body, headers=api.key)
        assert answer.status_code == 422, body
    skipped = api.http.post(
        "/v1/batches",
        params={"name": "n2", "skip_invalid": "true"},
        content=lines,
        headers=api.key | {"Content-Type": "application/x-ndjson"},
    )
    assert skipped.status_code == 202
    assert skipped.json()["submitted"] == 2
    assert skipped.json()["invalid"] == [{"row": 2, "field": "prompt", "msg": "must not be empty"}]


def test_a_batch_is_steered_and_only_by_its_own_key(api: Api) -> None:
    made = api.http.post(
        "/v1/batches", params={"name": "n4"}, json=[ROW | {"prompt": "x"}], headers=api.key
    ).json()
    url = f"/v1/batches/{made['batch']['id']}"
    assert api.http.post(f"{url}/pause", headers=api.key).json()["status"] == "paused"
    assert api.http.post(f"{url}/resume", headers=api.key).json()["status"] == "active"
    canceled = api.http.post(f"{url}/cancel", headers=api.key).json()
    assert canceled["counts"]["canceled"] == 1 and canceled["done"] == 1
    assert api.http.post(f"{url}/explode", headers=api.key).status_code == 404
    other = api.new_key("other")
    assert api.http.get(url, headers=other).status_code == 404
    assert api.http.post(f"{url}/cancel", headers=other).status_code == 404
    assert api.http.get("/v1/batches", headers=other).json()["batches"] == []
    events = api.http.get(f"{url}/events", headers=api.key)
    assert events.status_code == 200 and "event: batch" in events.text
