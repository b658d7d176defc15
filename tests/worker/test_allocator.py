"""The worker's allocator policy: memory freed by one step is reused by the next, not faulted in
again from the kernel."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Allocate, touch and free a 64 MiB block 20 times; print the page faults that took.
_CYCLES = """
import resource, sys
from worker.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    block = b"\\x01" * (64 << 20)
    del block
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def _faults(policy: str) -> int:
    run = subprocess.run(
        [sys.executable, "-c", _CYCLES, policy], capture_output=True, text=True, check=True
    )
    return int(run.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the policy is glibc's mallopt")
def test_a_freed_block_is_reused_instead_of_faulted_in_again() -> None:
    pages = (64 << 20) // 4096
    default, kept = _faults("default"), _faults("keep")
    assert default > 10 * pages  # each cycle maps a fresh block and faults in every page
    assert kept < 3 * pages  # the first cycle's pages, reused by the other 19


def test_the_policy_is_left_alone_off_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker import allocator

    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert allocator.keep_freed_memory() is False
