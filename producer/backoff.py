"""How long a retry waits: one formula for stage retries, outbox publishes and webhooks."""

from __future__ import annotations

import random


def backoff_seconds(attempt: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(attempt-1))].

    The jitter spreads the retries of many jobs (a broker outage ends, a receiver comes back)
    instead of sending them back together.
    """
    return random.uniform(0, min(cap, base * 2 ** max(attempt - 1, 0)))
