"""Provider stability from attempts, on both databases: Postgres' percentile_cont and SQLite's offset reads
give the same figures; windows, error classes and 429s."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from pipeline.reports.stability import percentile, provider_stats, windows
from tests.reports.rows import Attempt, add_items, add_job, attempt_row, bulk, migrated

NOW = datetime(2026, 3, 10, 12, 0, 0)


def test_stats_and_percentiles(db_url: str) -> None:
    with migrated(db_url) as sessions:
        job_id = add_job(sessions, "stab", NOW, providers=["a", "b"])
        ids = add_items(sessions, job_id, 1, NOW)
        item = ids[0]
        recent = NOW - timedelta(minutes=10)
        rows = [attempt_row(job_id, item, recent, provider="a", latency_ms=ms) for ms in range(100, 0, -1)]
        rows += [attempt_row(job_id, item, recent, provider="a", outcome="retryable", http_status=503,
                             error_class="unavailable", latency_ms=5) for _ in range(6)]
        rows += [attempt_row(job_id, item, recent, provider="a", outcome="retryable", http_status=429,
                             error_class="rate_limited", latency_ms=3) for _ in range(4)]
        rows += [attempt_row(job_id, item, recent, provider="a", outcome="abandoned", http_status=None,
                             latency_ms=None)]
        rows += [attempt_row(job_id, item, recent, provider="a", outcome="started", http_status=None,
                             latency_ms=None)]
        # older than an hour: only in the day window
        rows += [attempt_row(job_id, item, NOW - timedelta(hours=3), provider="a", outcome="terminal",
                             http_status=400, error_class="content_blocked", latency_ms=50)]
        rows += [attempt_row(job_id, item, recent, provider="b", latency_ms=7)]
        bulk(sessions, Attempt, rows)
        with sessions() as s:
            w = windows(s, NOW)
            a = w["1h"]["a"]
            assert a.requests == 111 and a.succeeded == 100 and a.in_flight == 1
            assert a.success_rate == pytest.approx(100 / 111)
            assert a.p50_ms == pytest.approx(50.5) and a.p95_ms == pytest.approx(95.05) and a.max_ms == 100
            assert a.error_classes == {"unavailable": 6, "rate_limited": 4, "abandoned": 1}
            assert a.http_429 == 4 and a.rate_429 == pytest.approx(4 / 111)
            day = w["1d"]["a"]
            assert day.requests == 112 and day.error_classes["content_blocked"] == 1
            b = w["1h"]["b"]
            assert (b.requests, b.p50_ms, b.p95_ms, b.max_ms) == (1, 7.0, 7.0, 7)
            only_job = provider_stats(s, job_id=job_id + 1)
            assert only_job == {}


def test_python_percentile_matches_percentile_cont() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile(values, 0.95) == pytest.approx(95.05)
    assert percentile([4.0], 0.95) == 4.0
    assert percentile([], 0.5) is None
