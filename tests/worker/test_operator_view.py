"""What an operator sees, over the shared API stack (a real worker, API, Redis, PostgreSQL):
Prometheus metrics scraped and parsed after real jobs, the admin API and worker heartbeats,
the dashboard in a real browser while a bulk run runs, Flower against the worker, JSON logs
that carry the work, and ``imggen stats``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage
from prometheus_client.parser import text_string_to_metric_families

from producer.db import session_scope
from producer.keys import create_key
from testbed.deployments import Deployment
from testbed.services import free_port
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.slow
JOB = {"steps": 6, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def keys(api_stack: tuple[Deployment, str]) -> dict[str, str]:
    dep, _ = api_stack
    with session_scope(dep.settings.resolved_database_url) as session:
        return {
            "admin": create_key(session, "operator", admin=True)[1],
            "alice": create_key(session, "alice")[1],
            "bob": create_key(session, "bob")[1],
        }


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _submit(base: str, key: str, **body: Any) -> str:
    posted = httpx.post(f"{base}/v1/jobs", json=JOB | body, headers=_auth(key))
    assert posted.status_code == 202, posted.text
    return str(posted.json()["id"])


def _wait(base: str, key: str, job_ids: list[str], timeout: float = 120) -> list[dict[str, Any]]:
    deadline, views = time.monotonic() + timeout, []
    for job_id in job_ids:
        while True:
            view = httpx.get(f"{base}/v1/jobs/{job_id}", headers=_auth(key)).json()
            if view["status"] in ("succeeded", "failed", "canceled"):
                views.append(view)
                break
            assert time.monotonic() < deadline, f"job {job_id} still {view['status']}"
            time.sleep(0.2)
    return views


def _until(check: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at ``url``, parsed by prometheus-client's own parser."""
    text = httpx.get(url, timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _families(url: str) -> dict[str, str]:
    text = httpx.get(url, timeout=10).text
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_what_real_jobs_did(
    api_stack: tuple[Deployment, str], keys: dict[str, str]
) -> None:
    dep, base = api_stack
    worker_url = f"http://127.0.0.1:{dep.settings.metrics_port}/metrics"
    before_worker, before_api = _scrape(worker_url), _scrape(f"{base}/metrics")
    receiver = WebhookReceiver()
    jobs = [
        _submit(base, keys["alice"], prompt="a red circle", n=2, seed=1),
        _submit(base, keys["alice"], prompt="a blue square", seed=2, callback_url=receiver.url),
    ]
    assert all(view["status"] == "succeeded" for view in _wait(base, keys["alice"], jobs))
    _until(lambda: receiver.received, what="the webhook")

    def webhook_counted() -> dict[Any, float] | None:
        after = _scrape(worker_url)
        delivered = _value(after, "imggen_webhook_deliveries_total", outcome="delivered")
        was = _value(before_worker, "imggen_webhook_deliveries_total", outcome="delivered")
        return after if delivered >= was + 1 else None

    after = _until(webhook_counted, what="the webhook delivery counted")

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before_worker, name, **labels)

    assert grew("imggen_jobs_finished_total", outcome="succeeded", lane="interactive") == 2
    for stage in ("expand", "encode", "denoise", "decode", "score"):
        assert grew("imggen_stage_duration_seconds_count", stage=stage, model="tiny") >= 2, stage
        assert grew("imggen_stage_runs_total", stage=stage, outcome="succeeded") >= 2, stage
    assert grew("imggen_denoise_batch_images_count") >= 1
    assert grew("imggen_denoise_batch_images_sum") == 3  # 2 + 1 images, batched or not
    assert grew("imggen_unet_steps_total") + grew("imggen_unet_steps_saved_total") == 3 * 6
    assert _value(after, "imggen_model_load_seconds_count", model="tiny") >= 1

    api = _scrape(f"{base}/metrics")
    submitted = _value(api, "imggen_jobs_submitted_total", lane="interactive")
    assert submitted - _value(before_api, "imggen_jobs_submitted_total", lane="interactive") == 2
    assert _value(api, "imggen_jobs", status="succeeded", lane="interactive") >= 2
    for stage in ("expand", "denoise", "score"):
        for lane in ("interactive", "bulk"):
            assert ("imggen_queue_depth", (("lane", lane), ("stage", stage))) in api
    assert _value(api, "imggen_worker_processes_alive") >= 1

    # Prometheus' conventions: counters are *_total, durations in seconds, sizes in bytes.
    families = _families(worker_url) | _families(f"{base}/metrics")
    imggen = {name: kind for name, kind in families.items() if name.startswith("imggen_")}
    assert {"imggen_stage_duration_seconds", "imggen_webhook_deliveries", "imggen_jobs"} <= set(
        imggen
    )
    for name, kind in imggen.items():
        if kind == "histogram" and "batch" not in name:
            assert name.endswith("_seconds"), name


def test_admin_api_sees_every_key_and_the_workers(
    api_stack: tuple[Deployment, str], keys: dict[str, str]
) -> None:
    dep, base = api_stack
    mine = _submit(base, keys["alice"], prompt="a green triangle", seed=3)
    theirs = _submit(base, keys["bob"], prompt="a yellow circle", seed=4)
    _wait(base, keys["alice"], [mine])
    _wait(base, keys["bob"], [theirs])

    for path in ("/v1/admin/overview", "/v1/admin/jobs", "/v1/admin/workers"):
        assert httpx.get(f"{base}{path}", headers=_auth(keys["alice"])).status_code == 403
        assert httpx.get(f"{base}{path}").status_code == 401
    listed = httpx.get(f"{base}/v1/admin/jobs?limit=200", headers=_auth(keys["admin"])).json()
    ids = {job["id"] for job in listed["jobs"]}
    assert {mine, theirs} <= ids, "an admin key lists every key's jobs"
    own = httpx.get(f"{base}/v1/jobs?limit=200", headers=_auth(keys["alice"])).json()
    assert theirs not in {job["id"] for job in own["jobs"]}, "a plain key lists its own only"
    bulk = httpx.get(f"{base}/v1/admin/jobs?lane=bulk", headers=_auth(keys["admin"])).json()
    assert all(job["spec"]["lane"] == "bulk" for job in bulk["jobs"])
    bad = httpx.get(f"{base}/v1/admin/jobs?lane=fast", headers=_auth(keys["admin"]))
    assert bad.status_code == 422 and "lane" in bad.text

    counted = httpx.get(f"{base}/v1/admin/jobs/count", headers=_auth(keys["admin"])).json()
    succeeded = sum(counted["jobs"]["succeeded"].values())
    assert succeeded >= 2 and set(counted["queue_depth"]) >= {"expand", "denoise", "score"}

    def worker_with_model() -> dict[str, Any] | None:
        found = httpx.get(f"{base}/v1/admin/workers", headers=_auth(keys["admin"])).json()
        alive = [w for w in found["workers"] if w["alive"] and "tiny" in str(w["models"])]
        return alive[0] if alive else None

    worker = _until(worker_with_model, what="a live worker holding the model")
    assert worker["hostname"].startswith("test-api@")
    assert "imggen.denoise" in worker["queues"]
    png = httpx.get(f"{base}/v1/admin/jobs/{theirs}/images/0", headers=_auth(keys["admin"]))
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"


def test_json_logs_carry_job_stage_attempt_and_lane(
    api_stack: tuple[Deployment, str], keys: dict[str, str]
) -> None:
    dep, base = api_stack
    job_id = _submit(base, keys["alice"], prompt="a red square", seed=5)
    _wait(base, keys["alice"], [job_id])
    log = Path(dep.settings.home) / "worker.log"

    def records() -> list[dict[str, Any]]:
        found = []
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("job_id") == job_id:
                    found.append(record)
        return found

    mine = _until(lambda: len(records()) >= 5 and records(), what="the job's log records")
    stages = {record["stage"] for record in mine}
    assert stages >= {"expand", "encode", "denoise", "decode", "score"}
    for record in mine:
        assert record["attempt"] == 1 and record["lane"] == "interactive", record
        assert {"time", "level", "logger", "message"} <= set(record)


def test_stats_reports_and_plots_the_window(
    api_stack: tuple[Deployment, str], keys: dict[str, str], tmp_path: Path
) -> None:
    dep, base = api_stack
    _wait(base, keys["alice"], [_submit(base, keys["alice"], prompt="a blue circle", seed=6)])
    plot = tmp_path / "stats.png"
    result = dep.cli("stats", "--since", "30m", "--json", "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["jobs"]["succeeded"] >= 1 and stats["images"] >= 1
    for stage in ("expand", "encode", "denoise", "decode", "score"):
        row = stats["latency"][stage]
        assert row["runs"] >= 1 and 0 < row["p50"] <= row["p95"] <= row["p99"], stage
    assert len(stats["times"]) == len(stats["queue_depth"]["denoise"]) == 30
    with PILImage.open(plot) as image:
        assert image.size[0] >= 800 and len(set(image.convert("L").getdata())) > 10

    refused = dep.cli("stats", "--since", "yesterday-ish")
    assert refused.returncode == 2 and "--since" in refused.stderr


@pytest.fixture
def flower(api_stack: tuple[Deployment, str]) -> Iterator[str]:
    dep, _ = api_stack
    port = free_port()
    command = [sys.executable, "-m", "celery", "-A", "worker.app", "flower"]
    process = subprocess.Popen(
        [*command, f"--port={port}", "--address=127.0.0.1", "--basic-auth=ops:secret"],
        env=dep.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{base}/healthcheck", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        _until(up, timeout=60, what="Flower")
        yield base
    finally:
        process.terminate()
        process.wait(10)


def test_flower_sees_the_tasks_that_ran(
    api_stack: tuple[Deployment, str], keys: dict[str, str], flower: str
) -> None:
    _, base = api_stack
    assert httpx.get(f"{flower}/api/tasks").status_code == 401, "Flower without its password"
    job_id = _submit(base, keys["alice"], prompt="a yellow square", seed=7)
    _wait(base, keys["alice"], [job_id])

    def tasks() -> dict[str, Any] | None:
        found = httpx.get(f"{flower}/api/tasks", auth=("ops", "secret"), timeout=5).json()
        mine = {t["name"]: t for t in found.values() if job_id in str(t.get("args"))}
        return mine if "imggen.stage.expand" in mine else None

    mine = _until(tasks, what="the job's tasks in Flower")
    # Stages chained in the process that ran the previous one are not Celery tasks of their own
    # (README: "Flower"); expand always is, and it succeeded.
    assert mine["imggen.stage.expand"]["state"] == "SUCCESS"
    # And it reaches the worker itself (remote control over the Redis broker).
    workers = httpx.get(
        f"{flower}/api/workers?refresh=1", auth=("ops", "secret"), timeout=20
    ).json()
    assert any(name.startswith("test-api@") for name in workers), workers


def test_dashboard_in_a_real_browser_matches_the_api_during_a_bulk_run(
    api_stack: tuple[Deployment, str], keys: dict[str, str], tmp_path: Path
) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium here (apt-get install chromium): the dashboard is not opened")
    from playwright.sync_api import sync_playwright

    _, base = api_stack
    admin, alice = _auth(keys["admin"]), _auth(keys["alice"])
    rows = [JOB | {"prompt": f"a red circle {i}", "seed": i, "steps": 60} for i in range(12)]
    posted = httpx.post(f"{base}/v1/batches?name=dashboard", json=rows, headers=alice)
    assert posted.status_code == 202, posted.text
    batch_id = posted.json()["batch"]["id"]

    def batch_done() -> int:
        return int(httpx.get(f"{base}/v1/batches/{batch_id}", headers=alice).json()["done"])

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            elsewhere: list[str] = []  # anything not from the API (its thumbnails are blob: URLs)
            local = (base, f"blob:{base}")
            page.on(
                "request", lambda r: None if r.url.startswith(local) else elsewhere.append(r.url)
            )
            page.goto(f"{base}/dashboard#key={keys['admin']}")
            cell = f"#batches tr[data-batch='{batch_id}'] td[data-done]"
            page.wait_for_selector(cell, timeout=30_000)
            assert "key=" not in page.url, "the key is not left in the address bar"

            # While it runs: what the page shows catches up with what the API says.
            seen_running = False
            while (done := batch_done()) < len(rows):
                shown = page.wait_for_function(
                    f'() => Number(document.querySelector("{cell}")?.dataset.done) >= {done}',
                    timeout=15_000,
                )
                assert shown
                if (
                    not seen_running
                    and page.locator("#running td[data-step]:not([data-step=''])").count() > 0
                ):
                    seen_running = True
                    page.screenshot(path=str(tmp_path / "dashboard-running.png"), full_page=True)
                time.sleep(0.3)
            assert seen_running, "a running job was shown during the run"

            # At the end, every number on the page is the API's.
            page.wait_for_function(
                f'() => Number(document.querySelector("{cell}")?.dataset.done) === {len(rows)}'
                f' || !document.querySelector("{cell}")',
                timeout=15_000,
            )
            counted = httpx.get(f"{base}/v1/admin/jobs/count", headers=admin).json()

            def page_matches() -> bool:
                for status, lanes in counted["jobs"].items():
                    for lane, count in lanes.items():
                        selector = f"#jobs tr[data-status='{status}'] td[data-lane='{lane}']"
                        if page.inner_text(selector) != str(count):
                            return False
                for stage, lanes in counted["queue_depth"].items():
                    for lane, count in lanes.items():
                        selector = f"#queue tr[data-stage='{stage}'] td[data-lane='{lane}']"
                        if page.inner_text(selector) != str(count):
                            return False
                return True

            _until(page_matches, timeout=15, what="the page's counts to equal the API's")
            page.wait_for_selector("#images figure img[src^='blob:']", timeout=15_000)
            page.wait_for_selector("#workers td.alive", timeout=15_000)
            screenshot = Path(tmp_path / "dashboard.png")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert not elsewhere, f"the page fetched from elsewhere: {elsewhere}"
    with PILImage.open(screenshot) as image:
        assert image.size[0] >= 1400 and len(set(image.convert("L").getdata())) > 50
    keep = Path(__file__).resolve().parents[2] / "test-output"
    keep.mkdir(exist_ok=True)
    shutil.copy(screenshot, keep / "dashboard.png")
    shutil.copy(tmp_path / "dashboard-running.png", keep / "dashboard-running.png")
