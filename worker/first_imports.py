"""The first use of the model code in a process happens on one thread at a time.

Importing diffusers (and the peft it pulls in) from two threads at once can show one of them a
module half initialized ("cannot import name … from partially initialized module"): a stage's
first run and the model registry's first scan (on the heartbeat thread) would race. Each takes
this lock until it has been through once; after that the modules are loaded and nothing waits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_through: set[str] = set()  # who has been through once: "stage", "registry"


@contextmanager
def first_use(who: str) -> Iterator[None]:
    """Hold the lock while ``who`` runs, until it has once."""
    if who in _through:
        yield
        return
    with _lock:
        yield
        _through.add(who)
