"""The model registry as submit reads it, over a real SQLite database with rows as workers
write them: models, samplers and adapters judged by what some host serves, the reason a refused
folder was refused, the native size of a model whose folder this host cannot see, the folder
rules before any worker has registered, and the ``wait`` setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from migrations import upgrade
from producer.client import Client
from producer.db import session_scope
from producer.errors import InvalidJobSpec
from producer.models import Job, RegistryEntry, utcnow
from producer.settings import Settings

JOB: dict[str, Any] = {"steps": 4}


def _register(settings: Settings, model: str, host: str = "gpu-1", **columns: Any) -> None:
    row = {
        "family": "sdxl",
        "pipeline": "StableDiffusionXLPipeline",
        "native_width": 1024,
        "native_height": 1024,
        "samplers": ["ddim", "euler"],
        "adapters": ["ink"],
        "refused": None,
    } | columns
    with session_scope(settings.resolved_database_url) as session:
        session.merge(RegistryEntry(hostname=host, model=model, updated_at=utcnow(), **row))


@pytest.fixture()
def client(tmp_path: Path) -> Client:
    settings = Settings(home=tmp_path, model="base")
    upgrade(settings.resolved_database_url)
    return Client(settings)


def _refusal(client: Client, **fields: Any) -> dict[str, str]:
    with pytest.raises(InvalidJobSpec) as refused:
        client.prepare({"prompt": "a fox", **JOB, **fields})
    return refused.value.errors


def test_before_any_worker_registers_the_models_folder_decides(client: Client) -> None:
    assert _refusal(client, model="xl") == {
        "model": "not a model served here (GET /v1/models lists them)"
    }
    folder = client.settings.resolved_models_dir / "xl"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    assert client.prepare({"prompt": "a fox", "model": "xl"}).model == "xl"


def test_once_workers_register_their_word_decides(client: Client) -> None:
    _register(client.settings, "xl")
    _register(client.settings, "xl", host="gpu-2", adapters=["neon"], samplers=["unipc"])
    _register(client.settings, "flux", refused="'FluxPipeline' is not a pipeline imggen runs")
    assert client.prepare({"prompt": "a fox", "model": "xl", "loras": [{"name": "neon"}]})
    assert client.prepare({"prompt": "a fox"}).model is None  # the default is always taken
    assert "no worker serves this model" in _refusal(client, model="other")["model"]
    assert "FluxPipeline" in _refusal(client, model="flux")["model"]
    assert _refusal(client, model="xl", scheduler="dpmpp_2m").keys() == {"scheduler"}
    errors = _refusal(client, model="xl", loras=[{"name": "ink"}, {"name": "gone"}])
    assert list(errors) == ["loras.1.name"] and "ink, neon" in errors["loras.1.name"]


def test_a_model_registered_after_a_read_is_taken_at_once(client: Client) -> None:
    _register(client.settings, "xl")
    client.prepare({"prompt": "a fox", "model": "xl"})  # the registry is read, and kept
    _register(client.settings, "late")
    assert client.prepare({"prompt": "a fox", "model": "late"}).model == "late"


def test_a_registered_models_native_size_fills_a_job_without_one(client: Client) -> None:
    _register(client.settings, "xl")
    handle = client.submit("a fox", model="xl", steps=4)
    with session_scope(client.settings.resolved_database_url) as session:
        spec = session.get(Job, handle.id).spec  # type: ignore[union-attr]
    assert (spec["width"], spec["height"]) == (1024, 1024)


def test_wait_accepts_a_model_no_worker_has_yet(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, model="base", unserved_models="wait")
    upgrade(settings.resolved_database_url)
    _register(settings, "xl")
    folder = settings.resolved_models_dir / "coming"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    client = Client(settings)
    assert client.prepare({"prompt": "a fox", "model": "coming"}).model == "coming"
    with pytest.raises(InvalidJobSpec):
        client.prepare({"prompt": "a fox", "model": "nowhere"})
