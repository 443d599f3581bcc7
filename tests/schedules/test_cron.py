"""Cron arithmetic: fire times in the schedule's zone across DST, run names and template variables."""

from __future__ import annotations

from datetime import datetime

from pipeline.schedules.cron import latest_fire, make_run, manual_run_vars, more_than_daily, next_fire

BERLIN = "Europe/Berlin"


def test_weekly_monday_six_berlin_is_five_utc_in_winter_and_four_in_summer() -> None:
    assert latest_fire("0 6 * * 1", BERLIN, datetime(2026, 1, 7, 12)) == datetime(2026, 1, 5, 5)
    assert latest_fire("0 6 * * 1", BERLIN, datetime(2026, 7, 8, 12)) == datetime(2026, 7, 6, 4)
    assert next_fire("0 6 * * 1", BERLIN, datetime(2026, 1, 5, 5)) == datetime(2026, 1, 12, 5)


def test_latest_fire_includes_the_instant_itself() -> None:
    assert latest_fire("0 6 * * 1", BERLIN, datetime(2026, 1, 5, 5)) == datetime(2026, 1, 5, 5)
    assert latest_fire("0 6 * * 1", BERLIN, datetime(2026, 1, 5, 4, 59, 59, 900000)) == datetime(2025, 12, 29, 5)
    assert latest_fire("* * * * *", "UTC", datetime(2026, 1, 5, 4, 59, 0, 1)) == datetime(2026, 1, 5, 4, 59)


def test_a_time_in_the_spring_gap_fires_once_right_after_it() -> None:
    # 2026-03-29: Berlin jumps from 02:00 CET to 03:00 CEST (01:00 UTC); 02:30 does not exist that day
    assert next_fire("30 2 * * *", BERLIN, datetime(2026, 3, 28, 12)) == datetime(2026, 3, 29, 1)
    assert next_fire("30 2 * * *", BERLIN, datetime(2026, 3, 29, 1)) == datetime(2026, 3, 30, 0, 30)
    assert latest_fire("30 2 * * *", BERLIN, datetime(2026, 3, 29, 3)) == datetime(2026, 3, 29, 1)


def test_a_time_repeated_in_autumn_fires_once() -> None:
    # 2026-10-25: Berlin goes back from 03:00 CEST to 02:00 CET; 02:30 happens at 00:30 and at 01:30 UTC
    first = next_fire("30 2 * * *", BERLIN, datetime(2026, 10, 24, 12))
    assert first == datetime(2026, 10, 25, 0, 30)
    assert next_fire("30 2 * * *", BERLIN, first) == datetime(2026, 10, 26, 1, 30)
    assert latest_fire("30 2 * * *", BERLIN, datetime(2026, 10, 25, 2)) == first
    runs = {make_run("s", "30 2 * * *", BERLIN, t).job_suffix for t in (first, datetime(2026, 10, 26, 1, 30))}
    assert runs == {"2026-10-25", "2026-10-26"}


def test_more_than_daily() -> None:
    assert not more_than_daily("0 6 * * 1")
    assert not more_than_daily("15 2 * * *")
    for cron in ("* * * * *", "*/15 6 * * *", "0 6,18 * * *", "0 * * * *"):
        assert more_than_daily(cron), cron


def test_run_names_and_template_variables() -> None:
    weekly = make_run("social", "0 6 * * 1", BERLIN, datetime(2026, 1, 5, 5))
    assert weekly.job_suffix == "2026-01-05"
    assert weekly.template_vars() == {"run_date": "2026-01-05", "run_at": "2026-01-05T06:00:00+01:00",
                                      "schedule": "social"}
    twice = make_run("social", "0 6,18 * * *", BERLIN, datetime(2026, 1, 5, 17))
    assert twice.job_suffix == "202601051800"
    # just before midnight UTC is already the next day in Berlin: run_date is the schedule zone's date
    late = make_run("x", "30 0 * * *", BERLIN, datetime(2026, 1, 4, 23, 30))
    assert late.template_vars()["run_date"] == "2026-01-05"


def test_manual_run_variables() -> None:
    v = manual_run_vars(datetime(2026, 1, 4, 23, 30), BERLIN)
    assert v == {"run_date": "2026-01-05", "run_at": "2026-01-05T00:30:00+01:00", "schedule": "manual"}
    assert manual_run_vars(datetime(2026, 1, 4, 23, 30))["run_date"] == "2026-01-04"
