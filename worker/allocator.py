"""The C allocator's policy in a worker process: keep what the models free, for reuse.

glibc's malloc serves a large block (a denoise step's activations are tens of MB) with a fresh
``mmap`` and unmaps it when freed, so the next step's tensors fault in zeroed pages all over
again. A worker allocates the same sizes step after step: measured on a 2-core host with the
shapes model at 16-image batches, the pool process took ~100,000 page faults a second and a
quarter of its CPU time in the kernel, and its denoise ran ~20% slower than the same batch in a
short script. With large blocks taken from the heap and the heap never trimmed, freed memory
is reused as it is (PyTorch's tuning guide gets the same from jemalloc or tcmalloc). The price
is a resident size that stays at the process's peak, which a worker reaches on its first batch
anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

# mallopt's parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # an int: the largest threshold mallopt takes


def keep_freed_memory() -> bool:
    """Ask glibc to serve every block from the heap and to keep freed memory; False where the
    C library is not glibc (macOS, musl), whose allocators are left as they are."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    done = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM) == 1
    if not done:
        log.warning("mallopt refused: the allocator keeps its defaults")
    return done
