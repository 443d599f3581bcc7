"""`pipeline schedule add|list|remove|pause|resume`: scheduled runs (pipeline.schedules); `pipeline beat` fires them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands.common import ConfigOpt, emit_json, fail, guarded, out, settings_from, with_runtime
from pipeline.errors import InputError

schedule_app = typer.Typer(no_args_is_help=True, help="Scheduled runs of manifests (fired by `pipeline beat`).")



def _local(t: datetime | None, timezone: str) -> str:
    from pipeline.schedules.cron import to_local

    return "-" if t is None else to_local(t, timezone).strftime("%Y-%m-%d %H:%M %Z")


@schedule_app.command("add")
def add(manifest: Path, config: ConfigOpt = None,
        name: Annotated[str | None, typer.Option("--name", help="schedule name (default: the manifest's job)")] = None,
        missed: Annotated[str, typer.Option("--missed", help="fire times missed while no beat ran: run-once "
                                            "(the latest fires once when a beat starts) or skip")] = "run-once",
        ) -> None:
    """Register MANIFEST's `schedule: {cron, timezone}` (or update the schedule of that name)."""
    from pipeline import services
    from pipeline.clock import utcnow
    from pipeline.runtime import open_runtime
    from pipeline.schedules import store
    from pipeline.schedules.cron import next_fire

    if missed not in tuple(store.Missed):
        fail(InputError(f"--missed is run-once or skip, not {missed!r}", where="--missed"))
    settings = settings_from(config)
    loaded = guarded(lambda: services.load(manifest, settings))
    sched = loaded.manifest.schedule
    if sched is None:
        fail(InputError("the manifest has no `schedule: {cron, timezone}`", where=str(manifest)))
    sched_name = guarded(lambda: store.check_name(name or loaded.manifest.job))
    now = utcnow()
    rt = guarded(lambda: open_runtime(settings, check_storage=False))
    try:
        created = guarded(lambda: store.add(rt.sessions, name=sched_name, manifest_path=str(manifest.resolve()),
                                            cron=sched.cron, timezone=sched.timezone,
                                            missed=store.Missed(missed), now=now))
    finally:
        rt.close()
    nxt = next_fire(sched.cron, sched.timezone, now)
    out.print(f"schedule {sched_name} {'added' if created else 'updated'}: {sched.cron!r} in {sched.timezone}, "
              f"missed: {missed}; next run {_local(nxt, sched.timezone)}", highlight=False)


@schedule_app.command("list")
def list_(config: ConfigOpt = None,
          as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False) -> None:
    """Schedules with their next and last runs."""
    from rich.table import Table

    from pipeline.clock import utcnow
    from pipeline.schedules import store

    rows = with_runtime(config, lambda rt: store.list_schedules(rt.sessions, utcnow()))
    if as_json:
        emit_json({"schedules": [r.as_json() for r in rows]})
        return
    t = Table(title="schedules", title_justify="left")
    for col in ("name", "cron", "zone", "missed", "state", "next run", "last job"):
        t.add_column(col, no_wrap=col in ("name", "cron", "next run"))
    for r in rows:
        t.add_row(r.name, r.cron, r.timezone, r.missed, "paused" if r.paused else "active",
                  _local(r.next_fire_at, r.timezone), r.last_job or "-")
    out.print(t)


@schedule_app.command("remove")
def remove(name: str, config: ConfigOpt = None) -> None:
    """Delete a schedule (its fire history stays: adding it again never repeats a run)."""
    from pipeline.schedules import store

    with_runtime(config, lambda rt: store.remove(rt.sessions, name))
    out.print(f"schedule {name} removed")


@schedule_app.command("pause")
def pause(name: str, config: ConfigOpt = None) -> None:
    """Stop firing a schedule; the times that pass while paused are not run."""
    from pipeline.clock import utcnow
    from pipeline.schedules import store

    with_runtime(config, lambda rt: store.set_paused(rt.sessions, name, utcnow(), paused=True))
    out.print(f"schedule {name} paused")


@schedule_app.command("resume")
def resume(name: str, config: ConfigOpt = None) -> None:
    """Fire a paused schedule again, from its next time on."""
    from pipeline.clock import utcnow
    from pipeline.schedules import store

    with_runtime(config, lambda rt: store.set_paused(rt.sessions, name, utcnow(), paused=False))
    out.print(f"schedule {name} active")


def register(app: typer.Typer) -> None:
    app.add_typer(schedule_app, name="schedule")
