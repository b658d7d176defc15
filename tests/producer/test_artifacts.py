from __future__ import annotations

from pathlib import Path

from producer.artifacts import ArtifactStore, job_key


def test_put_get_round_trip_and_overwrite_leave_one_file(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    key = job_key("abc", "image-0.png")
    uri = store.put(key, b"first")
    assert store.put(key, b"second") == uri
    assert store.get(uri) == b"second"
    assert [p.name for p in (tmp_path / "artifacts" / "jobs" / "abc").iterdir()] == ["image-0.png"]


def test_memory_filesystem_urls_work_too() -> None:
    store = ArtifactStore("memory://imggen-test")
    uri = store.put(job_key("j1", "latents.safetensors"), b"\x00\x01")
    assert uri.startswith("memory://")
    assert store.get(uri) == b"\x00\x01"
