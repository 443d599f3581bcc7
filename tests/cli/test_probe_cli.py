"""`pipeline probe PROVIDER`: the baseline stability test against a started sandbox with 20% 503s, on the same
code path as real jobs; it asks before spending and spends nothing when told no."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, func, select
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.db.models import Item, Job
from pipeline.sandbox.server import SandboxServer, start_sandbox

FAULTY = {"seed": 11, "protocols": {"gemini": {"latency": {"min_s": 0.02, "max_s": 0.1},
                                                "faults": {"http_503": 0.2}}}}


@pytest.fixture
def faulty_sandbox() -> Iterator[SandboxServer]:
    server = start_sandbox(FAULTY)
    try:
        yield server
    finally:
        server.stop()


def _config(tmp_path: Path, sandbox_url: str) -> Path:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump({
        "database_url": f"sqlite:///{tmp_path / 'db.sqlite'}", "storage_url": f"file://{tmp_path / 'out'}",
        "providers": {"sandbox": {"base_url": sandbox_url, "limits": {"rpm": 600}}},
        "worker": {"max_attempts": 8, "backoff_base_s": 0.05, "backoff_cap_s": 0.2, "lease_s": 10}}))
    return cfg


def test_probe_reports_stability_of_a_faulty_provider(tmp_path: Path, faulty_sandbox: SandboxServer) -> None:
    cfg = _config(tmp_path, faulty_sandbox.url)
    res = CliRunner().invoke(app, ["probe", "sandbox", "--n", "30", "--yes", "--concurrency", "4",
                                   "--config", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["job"].startswith("probe-sandbox-") and r["provider"] == "sandbox"
    assert r["items"]["succeeded"] == 30  # the retries carry every item through 20% 503s
    billed = faulty_sandbox.ledger()
    assert r["requests"] == billed["requests"] > 30
    assert r["error_classes"] == {"unavailable": billed["by_status"]["503"]}
    assert r["success_rate"] == round(30 / r["requests"], 4) < 1
    lat = r["latency_ms"]
    assert 15 <= lat["min"] <= lat["p50"] <= lat["p95"] <= lat["max"]
    rate = r["rate"]
    assert rate["configured_rpm"] == 600 and rate["gate_limit_rpm"] == 582.0
    assert rate["busiest_minute"] == r["requests"] and 1 <= rate["peak_concurrency"] <= 4
    # headroom is computed from the unrounded rate and then rounded to 4 places; achieved_rpm is shown to 2
    assert rate["achieved_rpm"] > 0 and rate["headroom"] == pytest.approx(1 - rate["achieved_rpm"] / 600, abs=1e-4)
    assert r["http_429"] == 0
    assert Decimal(r["cost_usd"]) == Decimal(billed["billed_usd"]) > 0
    assert Decimal(r["estimated_usd"]) == Decimal("0.134") * 30

    human = CliRunner().invoke(app, ["probe", "sandbox", "--n", "3", "--yes", "--config", str(cfg)],
                               env={"COLUMNS": "160"})
    assert human.exit_code == 0, human.output
    for part in ("success rate", "p50", "p95", "max", "error classes", "rate headroom", "cost"):
        assert part in human.stdout


def test_probe_asks_first_and_spends_nothing_on_no(tmp_path: Path, faulty_sandbox: SandboxServer) -> None:
    cfg = _config(tmp_path, faulty_sandbox.url)
    res = CliRunner().invoke(app, ["probe", "sandbox", "--n", "50", "--config", str(cfg)], input="n\n")
    assert res.exit_code == 1
    assert "estimated $6.70" in res.output and "Spend it?" in res.output
    assert faulty_sandbox.ledger()["requests"] == 0
    db = tmp_path / "db.sqlite"
    if db.exists():
        engine = create_engine(f"sqlite:///{db}")
        with engine.connect() as c:
            assert (c.scalar(select(func.count()).select_from(Job)) or 0) == 0
            assert (c.scalar(select(func.count()).select_from(Item)) or 0) == 0
        engine.dispose()


def test_probe_bad_input_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(f"database_url: sqlite:///{tmp_path / 'db.sqlite'}\n")
    for args in (["probe", "nope", "--yes"], ["probe", "sandbox", "--resolution", "8K", "--yes"],
                 ["probe", "sandbox", "--n", "0", "--yes"]):
        res = CliRunner().invoke(app, [*args, "--config", str(cfg)])
        assert res.exit_code == 2, (args, res.output)
    assert not (tmp_path / "db.sqlite").exists()
