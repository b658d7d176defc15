from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy.exc import OperationalError

from producer.artifacts import ArtifactStore, job_key, job_prefix
from producer.client import Client
from producer.settings import Settings
from testbed.services import free_port


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


@pytest.fixture()
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system of 64 KiB (a tmpfs), to fill up."""
    root = tmp_path / "small"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(root)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield root
    subprocess.run(["umount", str(root)], check=True)


def test_a_full_disk_leaves_no_partial_file(full_disk: Path) -> None:
    store = ArtifactStore(str(full_disk))
    store.put(job_key("job-1", "small.png"), b"fits")
    with pytest.raises(OSError):
        store.put(job_key("job-1", "image-0.png"), b"x" * 200_000)
    assert sorted(p.name for p in full_disk.rglob("*") if p.is_file()) == ["small.png"]


def test_an_input_image_whose_job_is_not_recorded_is_removed(tmp_path: Path) -> None:
    png = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(png, format="PNG")
    unreachable = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x"
    client = Client(Settings(home=tmp_path, database_url=unreachable))
    with pytest.raises(OperationalError):
        client.submit("a red fox", image=png.getvalue(), width=64, height=64)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
