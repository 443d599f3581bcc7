"""scripts/bench.py end to end in its --quick size: real Postgres, Redis, `pipeline worker` and Celery worker
processes and the sandbox over HTTP. Checks the JSON contract of DESIGN.md ("Benchmark"), not the figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench.py"
#: every run carries these (DESIGN.md contract); None where a figure does not apply
RUN_KEYS = {"name", "images", "requests", "wall_s", "images_per_min", "utilization", "http_429", "p50_s", "p95_s"}


@pytest.fixture
def services() -> None:
    import redis
    from sqlalchemy import create_engine, text

    from tests.fixtures.services import PG_ADMIN, REDIS_BASE

    try:
        redis.Redis.from_url(REDIS_BASE).ping()
        eng = create_engine(PG_ADMIN)
        with eng.connect() as c:
            c.execute(text("SELECT 1"))
        eng.dispose()
    except Exception as e:
        unavailable(f"Postgres and Redis ({type(e).__name__})")


def _bench(scenario: str, timeout_s: float) -> dict[str, Any]:
    res = subprocess.run([sys.executable, str(BENCH), scenario, "--quick", "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=timeout_s)
    assert res.stdout.strip(), res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout[-2000:]  # one JSON object, nothing else on stdout
    out: dict[str, Any] = json.loads(lines[0])
    errors = {r["name"]: r["error"] for r in out["runs"] if r.get("error")}
    assert not errors and res.returncode == 0, (errors, res.stderr[-3000:])
    return out


def _check_common(out: dict[str, Any], scenario: str, names: list[str]) -> dict[str, dict[str, Any]]:
    assert out["scenario"] == scenario
    assert {"cores", "mem", "python"} <= set(out["machine"])
    assert [r["name"] for r in out["runs"]] == names
    for run in out["runs"]:
        assert set(run) >= RUN_KEYS, run
    return {r["name"]: r for r in out["runs"]}


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(420)
def test_throughput_quick(services: None) -> None:
    out = _bench("throughput", 400)
    runs = _check_common(out, "throughput", ["pipeline", "celery_rate_limit", "naive", "pipeline_hidden_limit"])
    items = out["params"]["items"]
    pl = runs["pipeline"]
    assert pl["images"] == items and pl["unfinished"] == 0
    assert pl["requests"] >= items and 0 < pl["utilization"] <= 1.5
    assert 0 < pl["p50_s"] <= pl["p95_s"]
    assert pl["wall_s"] > 0 and pl["images_per_min"] > 0
    cel = runs["celery_rate_limit"]
    assert cel["images"] + cel["failed"] + cel["unfinished"] == items
    assert runs["naive"]["images"] > 0 and runs["naive"]["requests"] >= runs["naive"]["images"]
    hidden = runs["pipeline_hidden_limit"]
    assert hidden["real_rpm"] < hidden["config_rpm"] and hidden["images"] == hidden["items"]
    for run in out["runs"]:
        assert isinstance(run["http_429"], int) and run["http_429"] >= 0
    assert {"pipeline_target", "hidden_limit_target"} <= set(out["summary"])


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_overhead_quick(services: None) -> None:
    out = _bench("overhead", 280)
    runs = _check_common(out, "overhead", ["pipeline", "celery_noop", "celery_http", "submit_2k"])
    assert runs["pipeline"]["images"] == out["params"]["items"] and runs["pipeline"]["items_per_s"] > 0
    assert runs["celery_noop"]["done"] == out["params"]["noop_tasks"] and runs["celery_noop"]["items_per_s"] > 0
    assert runs["celery_http"]["images"] == out["params"]["items"] and runs["celery_http"]["items_per_s"] > 0
    big = runs["submit_2k"]
    assert big["items"] == 2000 and big["validate_s"] > 0 and big["submit_s"] > 0 and big["peak_rss_mb"] > 10
    assert out["summary"]["overhead_ratio"]["value"] > 0
