"""Exponential backoff with full jitter, capped (the AWS architecture blog's "full jitter")."""

from __future__ import annotations

import random


def backoff_s(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Delay before retry number `attempt` (1 = first retry): uniform in [0, min(cap, base * 2**(attempt-1))]."""
    if attempt < 1:
        attempt = 1
    ceiling = min(cap_s, base_s * (2 ** min(attempt - 1, 62)))
    return rng.uniform(0, ceiling)
