"""Artifacts a committed stage wrote, kept in memory for the next stage if it runs in this process.

The artifact store stays the copy every worker reads. But a worker that consumes every queue
(the default, and any single-worker deployment) usually runs a job's next stage itself, and
reading back what it has just written costs time the direct loop never spends: decoding a job's
two PNGs again took longer than the score stage's own work.

An artifact is handed over only once the stage that wrote it has committed: until then another
worker may take the stage over and write the same key, and a committed stage is never claimed
again. Each artifact has one reader (the next stage), so taking it removes it; what no stage of
this process takes (the next stage ran elsewhere) is dropped oldest first past ``max_bytes``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import torch
from PIL import Image as PILImage


class Handover:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()  # uri -> (value, bytes)
        self._bytes = 0
        self._lock = threading.Lock()

    def offer(self, uri: str, value: Any) -> None:
        """Keep ``value`` (a dict of tensors, or a PIL image) as what ``uri`` holds."""
        if self.max_bytes <= 0:
            return  # turned off: not even the copy
        if not isinstance(value, PILImage.Image):
            value = {name: _own_cpu_copy(tensor) for name, tensor in value.items()}
        size = _size(value)
        if size > self.max_bytes:
            return
        with self._lock:
            self._pop(uri)
            self._entries[uri] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                self._pop(next(iter(self._entries)))

    def take(self, uri: str) -> Any | None:
        """What ``uri`` holds, if this process kept it (once), else None."""
        with self._lock:
            return self._pop(uri)

    def __len__(self) -> int:
        return len(self._entries)

    def _pop(self, uri: str) -> Any | None:
        entry = self._entries.pop(uri, None)
        if entry is None:
            return None
        self._bytes -= entry[1]
        return entry[0]


def _own_cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    # A job's slice of a batch would keep the whole batch's memory alive: copy it out.
    tensor = tensor.detach().cpu()
    return tensor if tensor.untyped_storage().nbytes() == tensor.nbytes else tensor.clone()


def _size(value: Any) -> int:
    if isinstance(value, PILImage.Image):
        return value.width * value.height * len(value.getbands())
    return sum(tensor.nbytes for tensor in value.values())
