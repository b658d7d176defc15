"""The artifact store: embeddings, latents and images, in a local folder or any fsspec URL.

Keys are built by imggen from job ids and fixed names, never from user input. Writes go to a
temporary name first and are then renamed, so a reader never sees half a file and a stage that
runs twice leaves one file, not two.
"""

from __future__ import annotations

import contextlib
import uuid

import fsspec
from fsspec.core import url_to_fs


class ArtifactStore:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = url_to_fs(self.url)
        self._is_local = "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )

    def uri(self, key: str) -> str:
        """The URI that ``key`` is stored under (a plain path for the local store)."""
        path = f"{self.root}/{key}"
        return path if self._is_local else self.fs.unstrip_protocol(path)

    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` (replacing what was there) and return its URI."""
        path = f"{self.root}/{key}"
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        temporary = f"{parent}/.tmp-{uuid.uuid4().hex}"
        try:
            with self.fs.open(temporary, "wb") as handle:
                handle.write(data)
            self.fs.mv(temporary, path)
        except BaseException:  # a full disk, say: leave nothing half-written behind
            with contextlib.suppress(OSError):
                self.fs.rm(temporary)
            raise
        return self.uri(key)

    def remove_partial_writes(self, prefix: str) -> int:
        """Delete temporary files under ``prefix`` that a killed writer left; returns how many.

        Only for a prefix no live writer uses (a job's folder once its stage has been taken
        over from a lost worker): a writer whose temporary file goes fails its rename.
        """
        removed = 0
        for path in self.fs.glob(f"{self.root}/{prefix.strip('/')}/.tmp-*"):
            try:
                self.fs.rm(path)
                removed += 1
            except FileNotFoundError:
                pass
        return removed

    def exists(self, uri: str) -> bool:
        fs, path = url_to_fs(uri)
        return bool(fs.exists(path))

    def delete(self, uri: str) -> None:
        fs, path = url_to_fs(uri)
        if fs.exists(path):
            fs.rm(path)

    def get(self, uri: str) -> bytes:
        """Read back what ``put`` returned the URI of."""
        with fsspec.open(uri, "rb") as handle:
            return handle.read()


def job_key(job_id: str, name: str) -> str:
    """Where a job's artifact called ``name`` lives in the store."""
    return f"{job_prefix(job_id)}/{name}"


def job_prefix(job_id: str) -> str:
    """The folder of a job's artifacts in the store."""
    return f"jobs/{job_id}"
