from __future__ import annotations

from pathlib import Path

from producer.artifacts import ArtifactStore, job_key, job_prefix


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


def test_partial_writes_a_killed_writer_left_are_removed_and_nothing_else(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    kept = store.put(job_key("job-1", "image-0.png"), b"png")
    other_job = store.put(job_key("job-2", "image-0.png"), b"png")
    left = tmp_path / "jobs" / "job-1" / ".tmp-0123abcd"
    left.write_bytes(b"half a fi")
    (tmp_path / "jobs" / "job-2" / ".tmp-4567").write_bytes(b"another job's")
    assert store.remove_partial_writes(job_prefix("job-1")) == 1
    assert not left.exists()
    assert store.get(kept) == b"png" and store.get(other_job) == b"png"
    assert (tmp_path / "jobs" / "job-2" / ".tmp-4567").exists()
    assert store.remove_partial_writes(job_prefix("job-1")) == 0
