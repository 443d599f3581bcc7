"""The `pipeline` command: parses arguments, calls services, renders with rich. Nothing else lives here.

Exit codes: 0 ok, 1 some items failed or were blocked, 2 invalid input (nothing written).
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pipeline import services
from pipeline.clock import utcnow
from pipeline.commands import callbacks as callbacks_command
from pipeline.commands import probe as probe_command
from pipeline.commands import providers as providers_command
from pipeline.commands import review as review_command
from pipeline.commands import schedule as schedule_command
from pipeline.commands.common import (
    ConfigOpt,
    JobProgress,
    JsonOpt,
    emit_json,
    err,
    fail,
    guarded,
    job_id_of,
    job_providers,
    money,
    out,
    process_with_progress,
    render_summary,
    settings_from,
    with_runtime,
)
from pipeline.errors import InputError
from pipeline.reports import render
from pipeline.reports.queries import JobSummary, Totals

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Batch image generation pipeline.")
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
app.add_typer(db_app, name="db")


@app.command()
def validate(manifest: Path, config: ConfigOpt = None) -> None:
    """Check a manifest (and its references and templates) without writing anything."""
    settings = settings_from(config)
    loaded = guarded(lambda: services.load(manifest, settings))
    out.print(f"[green]ok[/] {escape(str(manifest))}: job {escape(repr(loaded.manifest.job))}, "
              f"{len(loaded.specs)} items, providers {escape(', '.join(loaded.manifest.providers))}")


@app.command()
def estimate(manifest: Path, config: ConfigOpt = None, as_json: JsonOpt = False,
             all_providers: Annotated[bool, typer.Option("--all", help="every configured provider")] = False) -> None:
    """Images and cost of a manifest on each provider. No provider is called."""
    settings = settings_from(config)
    loaded = guarded(lambda: services.load(manifest, settings))
    names = sorted(settings.providers) if all_providers else None
    rows = guarded(lambda: services.estimate(loaded, settings, names))
    if as_json:
        emit_json({"job": loaded.manifest.job, "images": len(loaded.specs), "providers": [
            {"provider": r.provider, "images": r.images,
             "cost_usd": None if r.cost_usd is None else f"{r.cost_usd:.2f}",
             "list_cost_usd": f"{r.list_cost_usd:.2f}", "unpriced": list(r.unpriced)} for r in rows]})
        return
    t = Table(title=f"estimate for {loaded.manifest.job} ({len(loaded.specs)} images)", title_justify="left")
    for col in ("provider", "images", "cost", "list price", "saved"):
        t.add_column(col, justify="left" if col == "provider" else "right")
    for r in rows:
        cost = "unpriced " + ",".join(r.unpriced) if r.cost_usd is None else money(r.cost_usd)
        saved = "" if r.cost_usd is None else money(r.list_cost_usd - r.cost_usd)
        t.add_row(escape(r.provider), str(r.images), escape(cost), money(r.list_cost_usd), saved)
    out.print(t)


@app.command()
def run(manifest: Path, config: ConfigOpt = None, as_json: JsonOpt = False,
        concurrency: Annotated[int | None, typer.Option(help="worker threads")] = None) -> None:
    """Submit a manifest and process it to the end in this process, with a progress bar."""
    settings = settings_from(config)
    loaded = guarded(lambda: services.load(manifest, settings))
    rt, stack = guarded(lambda: services.open_for(settings, list(loaded.manifest.providers)))
    with stack:
        started = utcnow()
        res = guarded(lambda: services.submit(rt, loaded, started))
        if not as_json:
            out.print(f"job {res.job_id} {escape(res.name)}: {len(loaded.specs)} items ({res.summary()})")
        final = process_with_progress(rt, res.job_id, len(loaded.specs), as_json=as_json, concurrency=concurrency)
        services.flush_spool(rt)
        this_run = services.summary(rt, res.job_id, since=started, with_spool=True)
    if as_json:
        emit_json(this_run.as_json())
    else:
        render_summary(this_run, scope=" — this run")
        t = this_run.totals
        if t.images == 0 and t.cache_hits > 0:
            out.print(f"[green]nothing new generated:[/] all {t.cache_hits} images came from the cache, "
                      f"$0.00 spent, {money(t.saved_usd)} saved against the list price")
    raise typer.Exit(1 if final.counts["failed"] or final.counts["blocked"] or this_run.spooled_items else 0)


@app.command()
def submit(manifest: Path, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Submit a manifest; workers (`pipeline worker`) process it. Prints the job id at once."""
    from pipeline.runtime import open_runtime

    settings = settings_from(config)
    loaded = guarded(lambda: services.load(manifest, settings))
    rt = guarded(lambda: open_runtime(settings))
    try:
        res = guarded(lambda: services.submit(rt, loaded, utcnow()))
        if as_json:
            emit_json({**services.summary(rt, res.job_id).as_json(), "new": res.new, "changed": res.changed,
                       "unchanged": res.unchanged, "cached_expected": res.cached})
        else:
            out.print(f"{res.job_id}")
            err.print(f"job {res.job_id} {escape(res.name)}: {res.summary()}")
    finally:
        rt.close()


@app.command()
def status(job: str, config: ConfigOpt = None, as_json: JsonOpt = False,
           watch: Annotated[bool, typer.Option("--watch", help="live progress until the job ends")] = False) -> None:
    """A job's state, counts and cost."""

    def show(rt: Runtime) -> JobSummary:
        job_id = job_id_of(rt, job)
        if watch and not as_json:
            with JobProgress(job, None) as bar:
                while True:
                    s = services.summary(rt, job_id)
                    bar.update(s)
                    if s.finished or s.state in ("paused", "cancelled"):
                        break
                    time.sleep(1)
        return services.summary(rt, job_id, with_spool=True)

    s = with_runtime(config, show)
    emit_json(s.as_json()) if as_json else render_summary(s)


@app.command()
def rerun(job: str, config: ConfigOpt = None,
          failed: Annotated[bool, typer.Option("--failed", help="failed and blocked items (default)")] = False,
          items: Annotated[str | None, typer.Option("--items", help="comma-separated item ids")] = None,
          all_items: Annotated[bool, typer.Option("--all", help="every final item")] = False,
          force: Annotated[bool, typer.Option("--force", help="bypass the cache (pays again)")] = False,
          rejected: Annotated[bool, typer.Option("--rejected", help="items rejected in review: regenerated with "
                                                 "their edited prompts, old images kept")] = False) -> None:
    """Put items of a job back to pending (failed and blocked by default). Workers process them; in the
    embedded mode (memory broker) they are processed here, with a progress bar, as `run` does."""
    from pipeline.core.control import rerun as do_rerun

    if rejected:
        if failed or items or all_items or force:
            fail(InputError("--rejected goes alone (it bypasses the cache for those items)", where="--rejected"))
        from pipeline.commands.review import rerun_rejected

        rerun_rejected(job, config)
        return

    if force and not all_items and not items:
        fail(InputError("--force needs --all or --items", where="--force"))
    if sum([failed, bool(items), all_items]) > 1:
        fail(InputError("choose one of --failed, --items, --all", where="rerun"))
    keys = [k.strip() for k in items.split(",") if k.strip()] if items else []
    settings = settings_from(config)
    providers = job_providers(settings, job)
    rt, stack = guarded(lambda: services.open_for(settings, providers if settings.embedded else []))
    with stack:
        started = utcnow()
        job_id, n = guarded(lambda: do_rerun(rt.sessions, job, started, failed=failed, items=keys,
                                             all_items=all_items, force=force))
        out.print(f"job {job_id}: {n} items back to pending")
        if not settings.embedded or n == 0:
            return
        final = process_with_progress(rt, job_id, n, as_json=False)
        render_summary(services.summary(rt, job_id, since=started), scope=" — this rerun")
    raise typer.Exit(1 if final.counts["failed"] or final.counts["blocked"] else 0)


@app.command()
def cancel(job: str, config: ConfigOpt = None) -> None:
    """Cancel a job: nothing new starts; calls in flight finish and are recorded."""
    from pipeline.core.batch import cancel_job_batches
    from pipeline.core.control import cancel as do_cancel

    def go(rt: Runtime) -> tuple[int, int, int]:
        job_id, n = do_cancel(rt.sessions, job, utcnow())
        return job_id, n, cancel_job_batches(rt.ctx, rt.batch_client, job_id, utcnow())

    job_id, n, batches = with_runtime(config, go)
    out.print(f"job {job_id}: cancelled, {n} items not started" + (f", {batches} batches cancelled" if batches else ""))


@app.command()
def pause(job: str, config: ConfigOpt = None) -> None:
    """Pause a job: nothing new starts until `pipeline resume`."""
    from pipeline.core.control import set_paused

    job_id = with_runtime(config, lambda rt: set_paused(rt.sessions, job, utcnow(), paused=True))
    out.print(f"job {job_id}: paused")


@app.command()
def resume(job: str, config: ConfigOpt = None) -> None:
    """Resume a paused job."""
    from pipeline.core.control import set_paused

    job_id = with_runtime(config, lambda rt: set_paused(rt.sessions, job, utcnow(), paused=False))
    out.print(f"job {job_id}: active")


@app.command()
def report(job: Annotated[str | None, typer.Argument()] = None, config: ConfigOpt = None, as_json: JsonOpt = False,
           by: Annotated[str, typer.Option("--by", help="provider | day | tag | resolution | job")] = "provider",
           since: Annotated[str | None, typer.Option(help="YYYY-MM-DD or ISO time")] = None,
           until: Annotated[str | None, typer.Option(help="YYYY-MM-DD or ISO time")] = None,
           csv_file: Annotated[Path | None, typer.Option("--csv", help="write CSV to this file")] = None,
           html_file: Annotated[Path | None, typer.Option("--html", help="write the job's HTML page here")] = None,
           gallery: Annotated[int, typer.Option(help="images in the HTML gallery", min=0)] = 200) -> None:
    """Cost report: a job's summary, or the ledger grouped by provider, day, tag, resolution or job."""
    from pipeline.reports.html import write_html
    from pipeline.reports.jobpage import build_job_page
    from pipeline.reports.outfile import check_writable, write_refusing
    from pipeline.reports.queries import GROUPINGS, job_summary, ledger_report, ledger_totals

    if by not in GROUPINGS:
        fail(InputError(f"unknown grouping {by!r} (one of {', '.join(GROUPINGS)})", where="--by"))
    if html_file is not None and job is None:
        fail(InputError("--html needs a JOB", where="--html"))
    for target, opt in ((csv_file, "--csv"), (html_file, "--html")):
        if target is not None:
            guarded(lambda: check_writable(target, opt))  # noqa: B023 - called at once
    t0 = _parse_time(since, "--since")
    t1 = _parse_time(until, "--until")

    def build(rt: Runtime) -> tuple[JobSummary | None, dict[str, Totals], Totals]:
        job_id = job_id_of(rt, job) if job else None
        with rt.sessions() as s:
            rows = ledger_report(s, by, job_id=job_id, since=t0, until=t1)
            total = ledger_totals(s, job_id=job_id, since=t0, until=t1)
            summ = None
            if job_id is not None:
                from pipeline.db.models import Job

                summ = job_summary(s, s.get_one(Job, job_id), since=t0, until=t1)
        if summ is not None:
            services.add_spool_state(rt.sessions, summ)
        if html_file is not None and job_id is not None:
            page = build_job_page(rt.sessions, rt.storage, job_id, utcnow(), since=t0, until=t1,
                                  gallery_limit=gallery)
            if summ is not None:
                page.summary.spooled_items, page.summary.spooled_keys = summ.spooled_items, summ.spooled_keys
            size = write_refusing(lambda: write_html(html_file, page), html_file, "--html")
            err.print(f"wrote {escape(str(html_file))} ({size / 1024:,.0f} KiB, {len(page.thumbs)} thumbnails)")
        return summ, rows, total

    summ, rows, total = with_runtime(config, build)
    if csv_file is not None:
        guarded(lambda: write_refusing(lambda: render.write_csv(csv_file, by, rows), csv_file, "--csv"))
    if as_json:
        emit_json(render.report_json(summ, by, rows, total, since=t0, until=t1))
    else:
        render.render_report(out, summ, by, rows, total)


def _parse_time(v: str | None, where: str) -> datetime | None:
    if v is None:
        return None
    try:
        return datetime.fromisoformat(v).replace(tzinfo=None)
    except ValueError:
        fail(InputError(f"not a date or ISO time: {v!r}", where=where))


@app.command()
def worker(config: ConfigOpt = None,
           concurrency: Annotated[int | None, typer.Option(help="threads (default: config worker.concurrency)")] = None,
           metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="serve Prometheus /metrics "
                                                            "on this port")] = None,
           ) -> None:
    """Run a worker: Celery consumer (threads pool) plus dispatcher, sweeper and lease renewal."""
    from pipeline.processing import processing_loop
    from pipeline.worker import node_name

    settings = settings_from(config)
    names = sorted(n for n, p in settings.providers.items() if not p.base_url)
    rt, stack = guarded(lambda: services.open_for(settings, names))
    conc = concurrency or settings.worker.concurrency
    with stack:
        if metrics_port is not None:
            from pipeline.metrics.collector import serve_metrics

            stack.callback(guarded(lambda: serve_metrics(rt.sessions, metrics_port,
                                                        budget_timezone=settings.budget.timezone)).stop)
        with processing_loop(rt, max_queued=settings.worker.max_queued) as loop:  # Celery consumes below
            loop.app.worker_main(["worker", "--pool=threads", f"--concurrency={conc}", "--loglevel=INFO",
                                  "--without-gossip", "--without-mingle", "-Q", "pipeline",
                                  f"--hostname={node_name()}"])


@app.command()
def beat(config: ConfigOpt = None) -> None:
    """Fire scheduled runs (`pipeline schedule`) and run the periodic duties without consuming tasks: dispatcher,
    sweeper and spool flushing. Any number of beats may run (each scheduled run fires once); workers also
    dispatch, a beat keeps due items flowing when workers are busy or scaled to zero."""
    from pipeline.schedules.fire import Fire

    def show(f: Fire) -> None:
        where = f"job {f.job_name} (id {f.job_id}): {f.detail}" if f.job_id is not None else f.detail
        err.print(f"beat: schedule {f.schedule} {f.fire_time:%Y-%m-%d %H:%M} UTC {f.outcome} {where}",
                  highlight=False, markup=False)

    settings = settings_from(config)
    guarded(lambda: services.run_beat(settings, on_fire=show,
                             on_ready=lambda: err.print("beat: firing schedules, dispatching due items; Ctrl-C "
                                                        "to stop")))


@app.command()
def sandbox(port: Annotated[int, typer.Option(help="port on 127.0.0.1", min=1, max=65535)] = 8090,
            host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
            profile: Annotated[Path | None, typer.Option(help="sandbox profile YAML")] = None) -> None:
    """Run the provider simulator (Gemini, batch, OpenAI images, Replicate, Kie.ai task API wire formats)."""
    from pipeline.sandbox.profile import load_profile
    from pipeline.sandbox.server import serve_forever

    prof = guarded(lambda: load_profile(profile)) if profile else None
    try:
        serve_forever(prof, host, port)
    except (OSError, OverflowError) as e:  # the port is taken, not ours, or the host cannot be bound
        fail(InputError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}", where="--port"))


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Apply the database migrations (Postgres or SQLite)."""
    with_runtime(config, lambda rt: None, migrate=True, create_db=True)
    out.print("database at head")


# commands defined next to their area (pipeline/commands/*.py), one line each
providers_command.register(app)
probe_command.register(app)
schedule_command.register(app)
callbacks_command.register(app)
review_command.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
