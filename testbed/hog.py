"""A saturated CPU: one busy-loop process per core, at the workers' own priority, for as long
as a scenario runs, so faults strike a machine with no time to spare."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def saturated_cpu(processes: int | None = None) -> Iterator[int]:
    """Start the hogs; yields how many run."""
    count = processes or os.cpu_count() or 1
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield count
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait(10)
