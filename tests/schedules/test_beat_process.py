"""Real `pipeline beat` processes against Postgres: two beats started together fire a missed run once (run-once
policy: it fires at start) and process it; a restarted beat does not fire it again."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from pipeline.clock import utcnow
from pipeline.db.models import Item, Job
from pipeline.runtime import open_runtime
from pipeline.sandbox.server import start_sandbox
from pipeline.schedules import store
from pipeline.states import FINAL_STATES
from tests.schedules.firing import settings_at, write_manifest, write_settings

PIPELINE = str(Path(sys.executable).parent / "pipeline")


def _beat(cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([PIPELINE, "beat"], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _stop(procs: list[subprocess.Popen[str]]) -> list[str]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    out = []
    for p in procs:
        try:
            _, stderr = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            _, stderr = p.communicate()
        out.append(stderr)
    return out


@pytest.mark.integration
def test_two_beats_fire_a_missed_run_once_and_a_restart_does_not_fire_it_again(tmp_path: Path, pg_url: str) -> None:
    sandbox = start_sandbox({"protocols": {"gemini": {"latency": {"min_s": 0.05, "max_s": 0.1}}}})
    procs: list[subprocess.Popen[str]] = []
    try:
        config = write_settings(tmp_path, pg_url, sandbox.url)
        now = utcnow()
        fire = (now - timedelta(hours=1)).replace(second=0, microsecond=0)
        # a daily run that was due an hour ago and missed (no beat was running): run-once fires it at start
        manifest = write_manifest(tmp_path / "daily.yaml", job="daily", cron=f"{fire.minute} {fire.hour} * * *",
                                  timezone="UTC", items=6)
        rt = open_runtime(settings_at(config), check_storage=False)
        try:
            store.add(rt.sessions, name="daily", manifest_path=str(manifest), cron=f"{fire.minute} {fire.hour} * * *",
                      timezone="UTC", missed=store.Missed.RUN_ONCE, now=now - timedelta(hours=2))
            procs = [_beat(tmp_path), _beat(tmp_path)]
            deadline = time.monotonic() + 90
            while True:
                with rt.sessions() as s:
                    states = list(s.scalars(select(Item.state).join(Job)))
                    names = list(s.scalars(select(Job.name)))
                if len(states) == 6 and all(st in FINAL_STATES for st in states):
                    break
                assert time.monotonic() < deadline, (names, states)
                assert all(p.poll() is None for p in procs), _stop(procs)
                time.sleep(0.5)
            assert names == [f"daily-{fire:%Y-%m-%d}"]
            assert set(states) == {"succeeded"}
            errs = _stop(procs)
            assert sum(e.count(" submitted ") for e in errs) == 1, errs
            assert all(p.returncode == 0 for p in procs), errs
            assert sandbox.ledger()["billed_images"] == 6

            restarted = _beat(tmp_path)
            procs = [restarted]
            time.sleep(4)  # several schedule ticks
            [err] = _stop(procs)
            assert " submitted " not in err and "firing schedules" in err, err
            fires = store.fires(rt.sessions)
            assert [(f.fire_time, f.outcome, f.job_name) for f in fires] == [
                (fire, "submitted", f"daily-{fire:%Y-%m-%d}")]
            with rt.sessions() as s:
                assert list(s.scalars(select(Job.name))) == [f"daily-{fire:%Y-%m-%d}"]
        finally:
            rt.close()
    finally:
        _stop(procs)
        sandbox.stop()
