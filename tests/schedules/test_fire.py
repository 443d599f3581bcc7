"""fire_due against Postgres: each fire time submits exactly one job, whatever runs at once (threads and
processes), across restarts and crashes; missed fires follow the schedule's policy."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from pipeline.db.models import Item, Job, Schedule, ScheduleFire
from pipeline.runtime import Runtime, open_runtime
from pipeline.schedules import store
from pipeline.schedules.fire import FireOutcome, fire_due
from pipeline.services import schedule_loader
from tests.schedules.firing import crash_child, race_child, settings_at, write_manifest, write_settings

#: Monday 2026-01-05 06:00 in Berlin
MONDAY = datetime(2026, 1, 5, 5, 0)


@pytest.fixture
def config(tmp_path: Path, pg_url: str) -> Path:
    return write_settings(tmp_path, pg_url)


@pytest.fixture
def rt(config: Path) -> Iterator[Runtime]:
    runtime = open_runtime(settings_at(config), check_storage=False)
    try:
        yield runtime
    finally:
        runtime.close()


def _add(rt: Runtime, manifest: Path, name: str, now: datetime, missed: str = "run-once") -> None:
    from pipeline.manifest import load_manifest

    sched = load_manifest(manifest).schedule
    assert sched is not None
    store.add(rt.sessions, name=name, manifest_path=str(manifest), cron=sched.cron, timezone=sched.timezone,
              missed=store.Missed(missed), now=now)


def _jobs(rt: Runtime) -> dict[str, list[str]]:
    with rt.sessions() as s:
        return {j.name: sorted(s.scalars(select(Item.prompt).where(Item.job_id == j.id)))
                for j in s.scalars(select(Job).order_by(Job.id))}


def test_fires_once_then_never_again_and_next_week_renders_new_prompts(tmp_path: Path, rt: Runtime,
                                                                        config: Path) -> None:
    manifest = write_manifest(tmp_path / "social.yaml")
    _add(rt, manifest, "social", MONDAY - timedelta(days=2))
    load = schedule_loader(rt.settings)
    assert fire_due(rt.sessions, MONDAY - timedelta(minutes=1), load) == []

    [f] = fire_due(rt.sessions, MONDAY + timedelta(seconds=1), load)
    assert (f.outcome, f.job_name, f.fire_time) == (FireOutcome.SUBMITTED, "social-2026-01-05", MONDAY)
    jobs = _jobs(rt)
    assert list(jobs) == ["social-2026-01-05"]
    assert all("week of 2026-01-05 (social)" in p for p in jobs["social-2026-01-05"])
    assert fire_due(rt.sessions, MONDAY + timedelta(seconds=2), load) == []

    # a restart (a new engine and sessions): nothing fires again
    again = open_runtime(settings_at(config), check_storage=False)
    try:
        assert fire_due(again.sessions, MONDAY + timedelta(minutes=10), schedule_loader(again.settings)) == []
        # even with the schedule's position lost, the unique fire row stops a second submission
        with again.sessions.begin() as s:
            s.execute(update(Schedule).values(handled_through=MONDAY - timedelta(days=1)))
        [f] = fire_due(again.sessions, MONDAY + timedelta(minutes=11), schedule_loader(again.settings))
        assert f.outcome == FireOutcome.ALREADY
    finally:
        again.close()
    assert list(_jobs(rt)) == ["social-2026-01-05"]

    [f] = fire_due(rt.sessions, MONDAY + timedelta(days=7, seconds=30), load)
    assert f.job_name == "social-2026-01-12"
    jobs = _jobs(rt)
    assert all("week of 2026-01-12" in p for p in jobs["social-2026-01-12"])
    with rt.sessions() as s:
        keys = [set(s.scalars(select(Item.cache_key).join(Job).where(Job.name == n)))
                for n in ("social-2026-01-05", "social-2026-01-12")]
        assert not keys[0] & keys[1]  # next week's prompts differ: nothing is answered by last week's cache
        assert [(r.fire_time, r.outcome) for r in s.scalars(select(ScheduleFire).order_by(ScheduleFire.id))] == [
            (MONDAY, "submitted"), (MONDAY + timedelta(days=7), "submitted")]


def test_missed_run_once_fires_only_the_latest_missed_time(tmp_path: Path, rt: Runtime) -> None:
    manifest = write_manifest(tmp_path / "hourly.yaml", job="hourly", cron="0 * * * *", timezone="UTC")
    _add(rt, manifest, "hourly", datetime(2026, 1, 5, 0, 0, 30))
    load = schedule_loader(rt.settings)
    # everything was down from 00:00:30 until 05:20: five fire times passed, the latest (05:00) runs once
    [f] = fire_due(rt.sessions, datetime(2026, 1, 5, 5, 20), load)
    assert (f.outcome, f.fire_time) == (FireOutcome.SUBMITTED, datetime(2026, 1, 5, 5))
    assert f.job_name == "hourly-202601050500"
    assert f.late_s == 20 * 60
    assert fire_due(rt.sessions, datetime(2026, 1, 5, 5, 21), load) == []
    assert list(_jobs(rt)) == ["hourly-202601050500"]


def test_missed_skip_drops_a_late_fire_and_runs_the_next_on_time(tmp_path: Path, rt: Runtime) -> None:
    manifest = write_manifest(tmp_path / "hourly.yaml", job="hourly", cron="0 * * * *", timezone="UTC")
    _add(rt, manifest, "hourly", datetime(2026, 1, 5, 0, 0, 30), missed="skip")
    load = schedule_loader(rt.settings)
    [f] = fire_due(rt.sessions, datetime(2026, 1, 5, 5, 20), load)
    assert (f.outcome, f.fire_time) == (FireOutcome.SKIPPED, datetime(2026, 1, 5, 5))
    assert fire_due(rt.sessions, datetime(2026, 1, 5, 5, 21), load) == []
    assert _jobs(rt) == {}
    [f] = fire_due(rt.sessions, datetime(2026, 1, 5, 6, 0, 10), load)  # within the grace: on time
    assert (f.outcome, f.job_name) == (FireOutcome.SUBMITTED, "hourly-202601050600")
    assert [(r.fire_time.hour, r.outcome) for r in store.fires(rt.sessions, "hourly")] == [
        (5, "skipped"), (6, "submitted")]


def test_paused_schedules_do_not_fire_and_resume_skips_the_paused_times(tmp_path: Path, rt: Runtime) -> None:
    manifest = write_manifest(tmp_path / "social.yaml")
    _add(rt, manifest, "social", MONDAY - timedelta(days=1))
    load = schedule_loader(rt.settings)
    store.set_paused(rt.sessions, "social", MONDAY - timedelta(hours=1), paused=True)
    assert fire_due(rt.sessions, MONDAY + timedelta(minutes=1), load) == []
    store.set_paused(rt.sessions, "social", MONDAY + timedelta(hours=1), paused=False)
    assert fire_due(rt.sessions, MONDAY + timedelta(hours=1, seconds=1), load) == []
    [f] = fire_due(rt.sessions, MONDAY + timedelta(days=7), load)
    assert f.job_name == "social-2026-01-12"


def test_a_manifest_that_fails_to_load_is_retried_until_it_loads(tmp_path: Path, rt: Runtime) -> None:
    manifest = write_manifest(tmp_path / "social.yaml")
    _add(rt, manifest, "social", MONDAY - timedelta(days=1))
    write_manifest(manifest, providers=("no-such-provider",))
    load = schedule_loader(rt.settings)
    [f] = fire_due(rt.sessions, MONDAY + timedelta(seconds=5), load)
    assert f.outcome == FireOutcome.ERROR and "no-such-provider" in f.detail
    assert store.fires(rt.sessions) == [] and _jobs(rt) == {}
    write_manifest(manifest)
    [f] = fire_due(rt.sessions, MONDAY + timedelta(seconds=65), load)
    assert (f.outcome, f.fire_time) == (FireOutcome.SUBMITTED, MONDAY)


def test_a_crash_inside_the_submit_neither_loses_nor_doubles_the_run(tmp_path: Path, rt: Runtime,
                                                                      config: Path) -> None:
    manifest = write_manifest(tmp_path / "social.yaml")
    _add(rt, manifest, "social", MONDAY - timedelta(days=1))
    now = MONDAY + timedelta(seconds=3)
    child = multiprocessing.get_context("spawn").Process(target=crash_child, args=(str(config), now))
    child.start()
    child.join(60)
    assert child.exitcode == -9  # killed inside the transaction, after its fire row was written
    assert store.fires(rt.sessions) == [] and _jobs(rt) == {}  # rolled back together: nothing half done
    [f] = fire_due(rt.sessions, now + timedelta(seconds=1), schedule_loader(rt.settings))
    assert f.outcome == FireOutcome.SUBMITTED
    assert list(_jobs(rt)) == ["social-2026-01-05"] and len(store.fires(rt.sessions)) == 1


def test_many_threads_and_two_processes_fire_each_time_exactly_once(tmp_path: Path, rt: Runtime,
                                                                     config: Path) -> None:
    for name in ("alpha", "beta", "gamma"):
        _add(rt, write_manifest(tmp_path / f"{name}.yaml", job=name, items=6), name, MONDAY - timedelta(days=1))
    now = MONDAY + timedelta(seconds=7)
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=race_child, args=(str(config), now, 6, ready, go, results)) for _ in range(2)]
    for p in procs:
        p.start()
    outcomes: list[str] = []
    lock = threading.Lock()
    load = schedule_loader(rt.settings)

    def here() -> None:
        go.wait(60)
        fires = fire_due(rt.sessions, now, load)
        with lock:
            outcomes.extend(f"{f.schedule}:{f.outcome}" for f in fires)

    threads = [threading.Thread(target=here) for _ in range(6)]
    for t in threads:
        t.start()
    for _ in procs:
        ready.get(timeout=60)
    go.set()
    for t in threads:
        t.join(60)
    for _ in procs:
        outcomes.extend(results.get(timeout=60))
    for p in procs:
        p.join(30)
        assert p.exitcode == 0

    submitted = sorted(o for o in outcomes if o.endswith(":submitted"))
    assert submitted == ["alpha:submitted", "beta:submitted", "gamma:submitted"], outcomes
    assert all(o.endswith((":submitted", ":already")) for o in outcomes), outcomes
    jobs = _jobs(rt)
    assert sorted(jobs) == ["alpha-2026-01-05", "beta-2026-01-05", "gamma-2026-01-05"]
    assert all(len(p) == 6 for p in jobs.values())
    assert sorted((f.schedule_name, f.fire_time) for f in store.fires(rt.sessions)) == [
        ("alpha", MONDAY), ("beta", MONDAY), ("gamma", MONDAY)]
