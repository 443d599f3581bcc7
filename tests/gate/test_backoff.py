"""Exponential backoff with full jitter, capped."""

from __future__ import annotations

import random

import pytest

from pipeline.gate.backoff import backoff_s


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 2.0), (2, 4.0), (3, 8.0), (6, 64.0), (9, 300.0),
                                                  (500, 300.0)])
def test_full_jitter_below_a_doubling_capped_ceiling(attempt: int, ceiling: float) -> None:
    rng = random.Random(7)
    delays = [backoff_s(attempt, 2.0, 300.0, rng) for _ in range(2000)]
    assert all(0 <= d <= ceiling for d in delays)
    assert max(delays) > 0.95 * ceiling and min(delays) < 0.05 * ceiling  # spread over the whole range
    assert sum(delays) / len(delays) == pytest.approx(ceiling / 2, rel=0.06)


def test_attempt_below_one_counts_as_the_first_retry() -> None:
    assert all(0 <= backoff_s(0, 2.0, 300.0, random.Random(i)) <= 2.0 for i in range(100))


def test_same_seed_same_delays() -> None:
    a = [backoff_s(n, 1.0, 60.0, random.Random(3)) for n in range(1, 10)]
    b = [backoff_s(n, 1.0, 60.0, random.Random(3)) for n in range(1, 10)]
    assert a == b
