"""`pipeline providers` and `pipeline providers resume NAME` on both databases: state (ok, paused, parked until
T, an expired park is ok), the gate's rate against the limit, and stability over the last hour and day."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.clock import utcnow
from pipeline.core.providers_state import set_status
from tests.reports.rows import Attempt, add_items, add_job, attempt_row, bulk, migrated


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


def _config(tmp_path: Path, db_url: str) -> Path:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump({"database_url": db_url, "storage_url": f"file://{tmp_path / 'out'}",
                                   "providers": {"sandbox": {"base_url": "http://127.0.0.1:9"}}}))
    return cfg


def test_providers_state_gate_and_stability(tmp_path: Path, db_url: str) -> None:
    now = utcnow()
    with migrated(db_url) as sessions:
        job_id = add_job(sessions, "p", now, providers=["sandbox", "kie"])
        item = add_items(sessions, job_id, 1, now)[0]
        recent, older = now - timedelta(minutes=5), now - timedelta(hours=5)
        rows = [attempt_row(job_id, item, recent, latency_ms=ms) for ms in (100, 200, 300, 400)]
        rows += [attempt_row(job_id, item, recent, outcome="retryable", http_status=503, error_class="unavailable")]
        rows += [attempt_row(job_id, item, older, outcome="retryable", http_status=429, error_class="rate_limited")]
        rows += [attempt_row(job_id, item, older, provider="ghost")]
        bulk(sessions, Attempt, rows)
        with sessions.begin() as s:
            set_status(s, "kie", "paused", "auth: API key not valid", None, now)
            set_status(s, "replicate", "parked", "daily_quota: per day", now + timedelta(hours=3), now)
            set_status(s, "google", "parked", "daily_quota: per day", now - timedelta(minutes=1), now)
    cfg = _config(tmp_path, db_url)
    runner = CliRunner()
    res = runner.invoke(app, ["providers", "--config", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    by_name = {p["name"]: p for p in json.loads(res.stdout)["providers"]}
    assert by_name["kie"]["state"] == "paused" and "API key" in by_name["kie"]["reason"]
    assert by_name["replicate"]["state"] == "parked" and by_name["replicate"]["until"]
    assert by_name["google"]["state"] == "ok"  # its park has expired
    assert by_name["ghost"]["configured"] is False  # seen in attempts, no longer configured
    sb = by_name["sandbox"]
    gate = sb["gate"]
    assert gate["limit_per_min"] == gate["rate_per_min"] > 0 and gate["concurrency"] == 16
    hour, day = sb["stability"]["1h"], sb["stability"]["1d"]
    assert (hour["requests"], hour["succeeded"], hour["http_429"]) == (5, 4, 0)
    assert hour["success_rate"] == 0.8 and hour["p50_ms"] == 250.0 and hour["max_ms"] == 400
    assert hour["error_classes"] == {"unavailable": 1}
    assert (day["requests"], day["http_429"], day["rate_429"]) == (6, 1, round(1 / 6, 4))

    human = runner.invoke(app, ["providers", "--config", str(cfg)], env={"COLUMNS": "200"})
    assert human.exit_code == 0, human.output
    assert "paused (auth: API key not valid)" in human.stdout and "parked until" in human.stdout
    assert "stability, last hour" in human.stdout and "unavailable 1" in human.stdout

    res = runner.invoke(app, ["providers", "resume", "kie", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "was paused" in res.stdout
    res = runner.invoke(app, ["providers", "--config", str(cfg), "--json"])
    assert {p["name"]: p for p in json.loads(res.stdout)["providers"]}["kie"]["state"] == "ok"
    bad = runner.invoke(app, ["providers", "resume", "nope", "--config", str(cfg)])
    assert bad.exit_code == 2 and "unknown provider" in bad.output


def test_providers_without_a_database_still_lists_config(tmp_path: Path) -> None:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump({"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/none"}))
    res = CliRunner().invoke(app, ["providers", "--config", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert "sandbox" in {p["name"] for p in obj["providers"]} and "database" in obj["note"]


def test_providers_shows_the_live_redis_gate(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    """Cluster mode: the rate, in-flight slots and parks shown are the shared Redis gate's, live."""
    import redis

    from pipeline.gate.base import GateLimits
    from pipeline.gate.redis import RedisGate

    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump({"database_url": pg_url, "broker_url": redis_url, "redis_url": redis_url,
                                   "storage_url": f"file://{tmp_path / 'out'}"}))
    client = redis.Redis.from_url(redis_url)
    try:
        gate = RedisGate(client)
        limits = GateLimits(rpm=6000, rpd=1_000_000, concurrency=16)
        tokens = [gate.acquire("sandbox", limits) for _ in range(3)]
        assert all(t.admitted for t in tokens)
        gate.feedback("sandbox", ok=False, rate_limited=True, retry_after_s=None)
        gate.park("kie", utcnow().timestamp() + 3600, "daily quota")
        res = CliRunner().invoke(app, ["providers", "--config", str(cfg), "--json"])
        assert res.exit_code == 0, res.output
        by_name = {p["name"]: p for p in json.loads(res.stdout)["providers"]}
        sb = by_name["sandbox"]["gate"]
        assert sb["in_flight"] == 3 and sb["today"] == 3
        assert sb["rate_per_min"] < sb["limit_per_min"] == 5820.0
        assert by_name["kie"]["gate"]["parked_until"] and by_name["kie"]["gate"]["park_reason"] == "daily quota"
        assert "db upgrade" in json.loads(res.stdout)["note"]  # a fresh database: no tables yet
        human = CliRunner().invoke(app, ["providers", "--config", str(cfg)], env={"COLUMNS": "200"})
        assert "parked (gate) until" in human.stdout and "3/16" in human.stdout
    finally:
        client.close()
