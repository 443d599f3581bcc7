"""`pipeline schedule add|list|pause|resume|remove` and the example jobs/social-weekly.yaml."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline import services
from pipeline.cli import app
from pipeline.clock import utcnow
from pipeline.schedules.cron import make_run, manual_run_vars
from tests.schedules.firing import settings_at, write_manifest, write_settings

ROOT = Path(__file__).resolve().parents[2]
SOCIAL = ROOT / "jobs" / "social-weekly.yaml"


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


def test_schedule_commands(tmp_path: Path, pg_url: str) -> None:
    cfg = str(write_settings(tmp_path, pg_url))
    manifest = write_manifest(tmp_path / "social.yaml", job="social")
    code, out = _cli("schedule", "add", str(manifest), "--config", cfg)
    assert code == 0 and "schedule social added" in out and "Europe/Berlin" in out, out
    code, out = _cli("schedule", "add", str(manifest), "--config", cfg, "--name", "social-b", "--missed", "skip")
    assert code == 0, out

    code, out = _cli("schedule", "list", "--config", cfg, "--json")
    assert code == 0, out
    rows = {r["name"]: r for r in json.loads(out)["schedules"]}
    assert set(rows) == {"social", "social-b"}
    s = rows["social"]
    assert (s["cron"], s["timezone"], s["missed"], s["state"]) == ("0 6 * * 1", "Europe/Berlin", "run-once", "active")
    assert rows["social-b"]["missed"] == "skip" and s["manifest"] == str(manifest.resolve())
    nxt = datetime.fromisoformat(s["next_fire_at"].rstrip("Z"))
    assert nxt > utcnow() and nxt.weekday() == 0 and nxt.hour in (4, 5)  # Monday 06:00 Berlin, in UTC

    assert _cli("schedule", "pause", "social", "--config", cfg)[0] == 0
    rows = {r["name"]: r for r in json.loads(_cli("schedule", "list", "--config", cfg, "--json")[1])["schedules"]}
    assert rows["social"]["state"] == "paused" and rows["social"]["next_fire_at"] is None
    assert _cli("schedule", "resume", "social", "--config", cfg)[0] == 0
    code, out = _cli("schedule", "list", "--config", cfg)
    assert code == 0 and "social-b" in out and "0 6 * * 1" in out, out
    assert _cli("schedule", "remove", "social-b", "--config", cfg)[0] == 0
    rows = {r["name"]: r for r in json.loads(_cli("schedule", "list", "--config", cfg, "--json")[1])["schedules"]}
    assert set(rows) == {"social"} and rows["social"]["state"] == "active"


@pytest.mark.parametrize("args, message", [
    (["remove", "nope"], "no schedule named 'nope'"),
    (["pause", "nope"], "no schedule named 'nope'"),
    (["add", "MANIFEST", "--missed", "sometimes"], "--missed"),
    (["add", "UNSCHEDULED"], "no `schedule"),
    (["add", "MANIFEST", "--name", "bad name!"], "schedule name"),
])
def test_bad_schedule_input_exits_2(tmp_path: Path, pg_url: str, args: list[str], message: str) -> None:
    cfg = str(write_settings(tmp_path, pg_url))
    manifest = write_manifest(tmp_path / "social.yaml")
    plain = tmp_path / "plain.yaml"
    doc = yaml.safe_load(manifest.read_text())
    doc.pop("schedule")
    plain.write_text(yaml.safe_dump(doc))
    args = [{"MANIFEST": str(manifest), "UNSCHEDULED": str(plain)}.get(a, a) for a in args]
    code, out = _cli("schedule", *args, "--config", cfg)
    assert code == 2 and message in out, out


def test_social_weekly_example(tmp_path: Path) -> None:
    settings = settings_at(write_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}"))
    doc = yaml.safe_load(SOCIAL.read_text())
    assert doc["schedule"] == {"cron": "0 6 * * 1", "timezone": "Europe/Berlin"} and doc["providers"] == ["sandbox"]
    # by hand (`pipeline run`): run_date is today in Berlin, the job keeps its name
    by_hand = services.load(SOCIAL, settings)
    assert by_hand.job.name == "social-weekly" and len(by_hand.specs) >= 7
    assert {"9:16", "1:1", "4:5", "16:9"} <= {s.aspect_ratio for s in by_hand.specs}
    today = manual_run_vars(utcnow(), "Europe/Berlin")["run_date"]
    assert all(f"week of {today}" in s.prompt for s in by_hand.specs)
    # as a scheduled run: its own job, prompts and keys of that week
    run = make_run("social-weekly", "0 6 * * 1", "Europe/Berlin", datetime(2026, 1, 5, 5))
    week = services.load(SOCIAL, settings, extra_vars=run.template_vars(), job_suffix=run.job_suffix)
    assert week.job.name == "social-weekly-2026-01-05"
    assert all("2026-01-05" in s.prompt and s.output_key.startswith("social/2026-01-05/") for s in week.specs)
    assert not {s.cache_key for s in week.specs} & {s.cache_key for s in by_hand.specs}
